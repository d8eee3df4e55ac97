"""The budgets sink counts every priced span once, per period, on Redis and on the local store."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis

from pipeline.budgets.registry import make_store
from pipeline.budgets.status import read_status
from sinks.budgets import BudgetsSink
from tests.budget_helpers import T0, Clock, Events, batch, context, llm_span, sink_config


@pytest.fixture(params=["redis", "local"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "redis":
        return request.getfixturevalue("redis_service").url
    return None


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _sink(tmp_path: Path, url: str | None, clock: Clock, events: Events | None = None, **cfg) -> BudgetsSink:
    cfg.setdefault("key_prefix", _prefix())
    sink = BudgetsSink("budgets", sink_config(url, **cfg), context(tmp_path, events), clock=clock)
    await sink.start()
    return sink


async def _user(sink: BudgetsSink, user: str, clock: Clock, scope: str = "user") -> dict:
    [st] = [s for s in await read_status(sink.store, sink.budgets, scope, user, clock()) if s.period == "day"]
    return st.to_json()


async def test_concurrent_writers_add_up_exactly(tmp_path: Path, redis_service) -> None:
    # 16 sinks (16 connections, as 16 workers would have) write 25 batches of 20 spans each, all at once.
    clock = Clock()
    prefix = _prefix()
    sinks = [
        BudgetsSink(f"budgets/w{i}", sink_config(redis_service.url, key_prefix=prefix), context(tmp_path), clock=clock)
        for i in range(16)
    ]
    for s in sinks:
        await s.start()

    async def worker(s: BudgetsSink) -> None:
        for _ in range(25):
            await s.write(batch([llm_span(cost=0.000123, tokens=(7, 3), user="carol", tier="pro") for _ in range(20)]))

    await asyncio.gather(*(worker(s) for s in sinks))
    spans = 16 * 25 * 20
    st = await _user(sinks[0], "carol", clock)
    assert st["spans"] == spans
    assert st["spent_tokens"] == spans * 10
    assert round(st["spent_usd"] * 1e9) == spans * 123_000  # exact in nano-USD, no float drift
    [tf] = await read_status(sinks[0].store, sinks[0].budgets, "tenant+feature", "acme/chat", clock())
    assert tf.spent_tokens == spans * 10
    for s in sinks:
        await s.close()


async def test_replayed_batch_counts_once(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock)
    b = batch([llm_span(cost=0.01, user="dave") for _ in range(3)], batch_id="kafka:otlp_spans/3/100-102/traces")
    for _ in range(4):
        await sink.write(b)
    await sink.write(batch([llm_span(cost=0.01, user="dave")]))
    st = await _user(sink, "dave", clock)
    assert st["spans"] == 4
    assert st["spent_usd"] == pytest.approx(0.04)
    t = sink.ctx.telemetry.registry
    assert t.get_sample_value("tracepipe_budget_batches_total", {"sink": "budgets", "outcome": "duplicate"}) == 3
    if store_url is not None:
        # A restarted worker (a new sink instance, same sink id) redelivered the batch: still once.
        other = BudgetsSink("budgets", sink.cfg, context(tmp_path), clock=clock)
        await other.start()
        await other.write(b)
        assert (await _user(other, "dave", clock))["spans"] == 4
        await other.close()
    await sink.close()


async def test_same_batch_id_from_another_sink_counts_separately(tmp_path: Path, redis_service) -> None:
    clock = Clock()
    prefix = _prefix()
    a = BudgetsSink("budgets/a", sink_config(redis_service.url, key_prefix=prefix), context(tmp_path), clock=clock)
    b = BudgetsSink("budgets/b", sink_config(redis_service.url, key_prefix=prefix), context(tmp_path), clock=clock)
    spans = [llm_span(cost=0.01, user="erin")]
    await a.write(batch(spans, "1"))
    await b.write(batch(spans, "1"))
    assert (await _user(a, "erin", clock))["spans"] == 2
    await a.close()
    await b.close()


async def test_period_rolls_over_at_local_midnight(tmp_path: Path, store_url: str | None) -> None:
    paris = ZoneInfo("Europe/Paris")
    before = datetime(2037, 11, 23, 23, 59, tzinfo=paris).timestamp()
    after = datetime(2037, 11, 24, 0, 1, tzinfo=paris).timestamp()
    clock = Clock(before)
    sink = await _sink(tmp_path, store_url, clock, time_zone="Europe/Paris")
    await sink.write(batch([llm_span(cost=0.02, user="fay", end=before) for _ in range(2)]))
    st = await _user(sink, "fay", clock)
    assert st["spent_usd"] == pytest.approx(0.04)
    assert st["reset_at"] == "2037-11-24T00:00:00+01:00"
    assert st["reset_in_seconds"] == 60
    clock.t = after
    assert (await _user(sink, "fay", clock))["spent_usd"] == 0  # a new day: nothing spent yet
    await sink.write(batch([llm_span(cost=0.03, user="fay", end=after)]))
    st = await _user(sink, "fay", clock)
    assert st["spent_usd"] == pytest.approx(0.03)
    assert st["period_start"] == "2037-11-24T00:00:00+01:00"
    # A late span of yesterday still lands in yesterday's counter, not today's.
    await sink.write(batch([llm_span(cost=0.05, user="fay", end=before)]))
    assert (await _user(sink, "fay", clock))["spent_usd"] == pytest.approx(0.03)
    clock.t = before
    assert (await _user(sink, "fay", clock))["spent_usd"] == pytest.approx(0.09)
    await sink.close()


async def test_spans_from_a_skewed_clock_count_in_the_current_period(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock(T0)
    sink = await _sink(tmp_path, store_url, clock)
    await sink.write(
        batch([llm_span(cost=0.02, user="ike", end=T0 - 86400 * 30), llm_span(cost=0.03, user="ike", end=T0 + 86400)])
    )
    st = await _user(sink, "ike", clock)
    assert (st["spans"], st["spent_usd"]) == (2, pytest.approx(0.05))
    await sink.close()


async def test_arrival_time_source_uses_the_clock(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock(T0)
    sink = await _sink(tmp_path, store_url, clock, time_source="arrival")
    await sink.write(batch([llm_span(cost=0.02, user="gus", end=T0 - 86400 * 3)]))
    assert (await _user(sink, "gus", clock))["spent_usd"] == pytest.approx(0.02)
    await sink.close()


async def test_threshold_fires_once_per_period(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    events = Events()
    sink = await _sink(tmp_path, store_url, clock, events)
    # free tier: $0.10/day; thresholds 50%, 80%, 100%. 20 batches of $0.01.
    for _ in range(20):
        await sink.write(batch([llm_span(cost=0.01, user="hal", tier="free")]))
    fired = [(e["budget"], e["threshold"], e["id"]) for _k, e in events]
    assert fired == [("user_daily", 0.5, "hal"), ("user_daily", 0.8, "hal"), ("user_daily", 1.0, "hal")]
    assert {k for k, _e in events} == {"budget"}
    last = events[-1][1]
    assert last["severity"] == "critical" and last["limit_usd"] == pytest.approx(0.10)
    assert last["spent_usd"] == pytest.approx(0.10) and last["reset_at"] == "2037-11-24T00:00:00+00:00"
    # The alert path's common fields.
    assert (last["rule"], last["state"], last["kind"], last["metric"]) == (
        "budget:user_daily",
        "firing",
        "budget",
        "spend_usd",
    )
    assert last["key"] == {"user": "hal"} and "fingerprint" not in last
    assert last["summary"] == "user hal reached 100% of budget user_daily (day): $0.1000 of $0.1000"
    assert last["window"] == {"start": "2037-11-23T00:00:00+00:00", "end": "2037-11-24T00:00:00+00:00"}
    reg = sink.ctx.telemetry.registry
    assert (
        reg.get_sample_value("tracepipe_budget_threshold_crossings_total", {"budget": "user_daily", "threshold": "1"})
        == 1
    )
    # The next day the same thresholds fire again, once.
    clock.t = T0 + 86400
    for _ in range(20):
        await sink.write(batch([llm_span(cost=0.01, user="hal", tier="free", end=clock.t)]))
    assert len(events) == 6
    assert events[-1][1]["period_start"] == "2037-11-24T00:00:00+00:00"
    await sink.close()


async def test_alerts_of_a_batch_whose_reply_was_lost_are_emitted_on_retry(
    tmp_path: Path, store_url: str | None
) -> None:
    # The script ran (counters and alert markers are set) but the sink never saw the reply.
    clock = Clock()
    events = Events()
    sink = await _sink(tmp_path, store_url, clock, events)
    b = batch([llm_span(cost=0.2, user="ivy", tier="free")])
    increments = sink.accountant.collect(b.spans, clock())
    lost = await sink.store.apply(sink.component_id, b.batch_id, increments)
    assert [a.threshold for a in lost.alerts] == [0.5, 0.8, 1.0]
    await sink.write(b)  # the runtime's retry
    assert [e["threshold"] for _k, e in events] == [0.5, 0.8, 1.0]
    await sink.write(b)  # a later redelivery: confirmed already, nothing again
    assert len(events) == 3
    assert (await _user(sink, "ivy", clock))["spans"] == 1
    await sink.close()


async def test_alert_without_an_event_channel_is_logged_without_ids(
    tmp_path: Path, store_url: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock, None)
    with caplog.at_level("WARNING", logger="test.budgets"):
        await sink.write(batch([llm_span(cost=5.0, user="secret-user-77", tier="pro")]))
    text = caplog.text
    assert "user_daily" in text and "crossed" in text
    assert "secret-user-77" not in text
    await sink.close()


async def test_utilization_gauge_has_ranks_not_ids(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock, top_n=3)
    spans = [llm_span(cost=0.01 * (i + 1), user=f"user-{i}", tier="free") for i in range(50)]
    await sink.write(batch(spans))
    await sink.flush()
    body = sink.ctx.telemetry.exposition()[0].decode()
    reg = sink.ctx.telemetry.registry
    top = [
        reg.get_sample_value("tracepipe_budget_utilization_ratio", {"budget": "user_daily", "rank": str(r)})
        for r in (1, 2, 3)
    ]
    assert top == pytest.approx([5.0, 4.9, 4.8])  # $0.50, $0.49, $0.48 of $0.10
    assert 'rank="4"' not in body
    assert "user-4" not in body
    assert reg.get_sample_value("tracepipe_budget_exceeded_ids", {"budget": "user_daily"}) == 41
    await sink.close()


async def test_spans_without_price_or_scope_are_not_counted(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock)
    unpriced = llm_span(cost=None, user="jo")
    unpriced.attributes.pop("gen_ai.usage.input_tokens")
    unpriced.attributes.pop("gen_ai.usage.output_tokens")
    anonymous = llm_span(cost=0.5, user=None)
    tokens_only = llm_span(cost=None, tokens=(10, 5), user="jo")
    await sink.write(batch([unpriced, anonymous, tokens_only]))
    st = await _user(sink, "jo", clock)
    assert (st["spans"], st["spent_usd"], st["spent_tokens"]) == (1, 0, 15)
    [tf] = await read_status(sink.store, sink.budgets, "tenant+feature", "acme/chat", clock())
    assert tf.spans == 2  # the anonymous span still counts for its tenant and feature
    await sink.close()


async def test_limits_resolve_override_then_tier_then_default(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock)
    await sink.write(
        batch(
            [
                llm_span(cost=0.01, user="vip", tier="free"),
                llm_span(cost=0.01, user="kim", tier="pro"),
                llm_span(cost=0.01, user="lee", tier="enterprise"),
                llm_span(cost=0.01, user="max", tier=None),
            ]
        )
    )
    limits = {u: (await _user(sink, u, clock))["limit_usd"] for u in ("vip", "kim", "lee", "max")}
    assert limits == {"vip": 100.0, "kim": 10.0, "lee": None, "max": 1.0}
    await sink.close()


async def test_redis_counters_expire_after_their_period(tmp_path: Path, redis_service) -> None:
    clock = Clock()
    prefix = _prefix()
    sink = await _sink(tmp_path, redis_service.url, clock, key_prefix=prefix, key_grace=600)
    await sink.write(batch([llm_span(cost=0.01, user="ned")]))
    r = redis.Redis.from_url(redis_service.url)
    keys = [k.decode() for k in r.scan_iter(f"{prefix}:{{user_daily}}:*")]
    counters = [k for k in keys if ":idem:" not in k]
    assert len(counters) == 1
    midnight = datetime(2037, 11, 24, tzinfo=ZoneInfo("UTC")).timestamp()
    assert r.expiretime(counters[0]) == int(midnight) + 600
    idem = [k.decode() for k in r.scan_iter(f"{prefix}:idem:*")]
    assert len(idem) == 1 and 21600 - 60 < r.ttl(idem[0]) <= 21600
    r.close()
    await sink.close()


async def test_local_store_snapshot_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    cfg = sink_config(None, local={"persist": True, "snapshot_interval": 3600})
    sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
    await sink.start()
    b = batch([llm_span(cost=0.07, user="oz")])
    await sink.write(b)
    await sink.close()
    assert (tmp_path / "budgets" / "budgets.json").exists()
    again = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
    await again.start()
    await again.write(b)  # remembered: not counted twice across the restart
    st = await _user(again, "oz", clock)
    assert st["spent_usd"] == pytest.approx(0.07) and st["spans"] == 1
    await again.close()


async def test_local_store_forgets_expired_periods(tmp_path: Path) -> None:
    clock = Clock()
    store = make_store("budgets", sink_config(None), tmp_path, clock=clock)
    sink = BudgetsSink("budgets", sink_config(None), context(tmp_path), clock=clock, store=store)
    await sink.write(batch([llm_span(cost=0.01, user="pat")]))
    assert len(store.counters) == 2
    clock.t = T0 + 40 * 86400  # past the month and the key grace
    await sink.write(batch([llm_span(cost=0.01, user="quin", end=clock.t)]))
    assert all("pat" not in k for k in store.counters)


async def test_absurd_costs_and_tokens_do_not_poison_the_batch(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    sink = await _sink(tmp_path, store_url, clock)
    spans = [
        llm_span(cost=float("inf"), user="zed"),
        llm_span(cost=float("nan"), user="zed"),
        llm_span(cost=1e30, tokens=(10**30, 5), user="zed"),
        llm_span(cost="0.25", user="zed"),  # type: ignore[arg-type]  # numeric strings are read as numbers
    ]
    await sink.write(batch(spans))
    st = await _user(sink, "zed", clock)
    assert st["spans"] == 4
    assert st["spent_usd"] == pytest.approx(1_000_000.25)
    assert st["spent_tokens"] == 10**12 + 3 * 150
    await sink.close()


async def test_token_budget_alert_names_tokens_and_its_combined_key(tmp_path: Path, store_url: str | None) -> None:
    clock = Clock()
    events = Events()
    sink = await _sink(tmp_path, store_url, clock, events, thresholds=[1.0])
    await sink.write(batch([llm_span(cost=0.0, tokens=(700_000, 400_000), user=None, tier=None)]))
    [(_kind, e)] = events
    assert (e["budget"], e["metric"], e["observed"]) == ("tenant_feature_monthly", "tokens", 1_100_000)
    assert e["key"] == {"tenant": "acme", "feature": "chat"} and e["id"] == "acme/chat"
    assert "1100000 of 1000000 tokens" in e["summary"]
    await sink.close()
