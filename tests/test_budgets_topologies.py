"""The budgets sink and guard on Redis Cluster and behind Redis Sentinel (real servers)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.budgets.config import RedisConfig
from pipeline.budgets.guard import BudgetGuard
from pipeline.budgets.status import read_status
from sinks.budgets import BudgetsSink
from tests.budget_helpers import Clock, Events, batch, context, llm_span, sink_config
from tests.services.redis import (
    start_local_redis,
    start_local_redis_cluster,
    start_local_redis_tls,
    start_local_sentinel,
)
from tests.services.requirements import require_binary


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    require_binary("redis-cli")  # Debian's redis-server pulls in redis-tools
    c = start_local_redis_cluster()
    yield c
    c.stop()


async def test_cluster_counts_once_per_batch_and_fires_thresholds_once(tmp_path: Path, cluster) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    events = Events()
    cfg = sink_config(None, key_prefix=f"k{uuid.uuid4().hex[:6]}", redis={"url": cluster.url, "cluster": True})
    sink = BudgetsSink("budgets", cfg, context(tmp_path, events), clock=clock)
    await sink.start()
    # Users spread over many slots; each budget's keys share one hash tag, so one script per budget.
    spans = [llm_span(cost=0.01, user=f"user-{i}", tier="free") for i in range(40)]
    b = batch(spans)
    await sink.write(b)
    await sink.write(b)  # redelivered
    for _ in range(9):
        await sink.write(batch([llm_span(cost=0.01, user="user-0", tier="free")]))
    [st] = [s for s in await read_status(sink.store, sink.budgets, "user", "user-0", clock()) if s.period == "day"]
    assert (st.spans, st.spent_usd) == (10, pytest.approx(0.10))
    [tf] = await read_status(sink.store, sink.budgets, "tenant+feature", "acme/chat", clock())
    assert tf.spans == 49
    assert [(e["id"], e["threshold"]) for _k, e in events] == [("user-0", 0.5), ("user-0", 0.8), ("user-0", 1.0)]
    guard = BudgetGuard(redis=RedisConfig(url=cluster.url, cluster=True), key_prefix=cfg.key_prefix, clock=clock)
    assert not guard.check(user="user-0", tier="free").allowed
    assert guard.check(user="user-1", tier="free").allowed
    assert not (await guard.acheck(user="user-0", tier="free")).allowed
    guard.close()
    await guard.aclose()
    await sink.close()


async def test_sentinel_finds_the_master(tmp_path: Path) -> None:
    master = start_local_redis()
    sentinel = start_local_sentinel(master)
    try:
        clock = Clock()
        redis_cfg = {"url": "redis://ignored/0", "sentinel": {"hosts": [sentinel.url], "service_name": "mymaster"}}
        cfg = sink_config(None, key_prefix=f"s{uuid.uuid4().hex[:6]}", redis=redis_cfg)
        sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
        await sink.start()
        b = batch([llm_span(cost=0.2, user="sam", tier="free")])
        await sink.write(b)
        await sink.write(b)
        [st] = [s for s in await read_status(sink.store, sink.budgets, "user", "sam", clock()) if s.period == "day"]
        assert st.spans == 1 and st.exceeded
        guard = BudgetGuard(redis=cfg.redis, key_prefix=cfg.key_prefix, clock=clock)
        decision = guard.check(user="sam", tier="free")
        assert not decision.allowed and decision.status_code == 429
        guard.close()
        await sink.close()
        # The counters are on the master the sentinel pointed at.
        import redis

        direct = redis.Redis(host="127.0.0.1", port=master.port)
        assert any(b":{user_daily}:" in k for k in direct.keys(f"{cfg.key_prefix}:*"))
        direct.close()
    finally:
        sentinel.stop()
        master.stop()


async def test_tls_and_password_from_config(tmp_path: Path) -> None:
    from pipeline.config import build_config

    require_binary("openssl")
    svc = start_local_redis_tls(password="s3cret-pw")
    try:
        raw = {
            "sinks": {
                "budgets": {
                    "redis": {
                        "url": svc.url,
                        "password": "${BUDGETS_REDIS_PASSWORD}",
                        "tls": {"ca_file": svc.extra["ca_file"]},
                    },
                    "key_prefix": f"tls{uuid.uuid4().hex[:6]}",
                    "budgets": {"user_daily": {"scope": "user", "limit": {"usd": 0.1}}},
                }
            },
            "service": {"pipelines": {"p": {"sinks": ["budgets"]}}},
        }
        cfg = build_config(raw, env={"BUDGETS_REDIS_PASSWORD": "s3cret-pw"}).sinks["budgets"].config
        clock = Clock()
        sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
        await sink.start()
        await sink.write(batch([llm_span(cost=0.2, user="tia")]))
        [st] = await read_status(sink.store, sink.budgets, "user", "tia", clock())
        assert st.spans == 1 and st.exceeded
        guard = BudgetGuard(redis=cfg.redis, key_prefix=cfg.key_prefix, clock=clock, fail_open=False)
        assert guard.check(user="tia").status_code == 429
        guard.close()
        await sink.close()
        # A wrong password is an unreachable store: the guard fails closed here (503), the sink buffers.
        bad = cfg.redis.model_copy(update={"password": "wrong"})
        refused = BudgetGuard(redis=bad, key_prefix=cfg.key_prefix, clock=clock, fail_open=False)
        assert refused.check(user="tia").status_code == 503
        refused.close()
    finally:
        svc.stop()
