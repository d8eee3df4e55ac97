"""Redis killed (-9) and restarted mid-stream: every batch is counted exactly once.

The instance runs with appendfsync always, as a budgets Redis should (an acknowledged
increment is on disk). Batches whose script ran just before the kill are recognised on
retry by their idempotency key; batches written while Redis is down are buffered
(`unavailable: buffer`) or retried by the chain (`unavailable: block`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from pipeline.budgets.status import read_status
from pipeline.chain import Chain, PipelineRun
from pipeline.config import RetryConfig
from sinks.budgets import BudgetsSink
from tests.budget_helpers import Clock, batch, context, llm_span, sink_config
from tests.services.redis import start_local_redis

BATCHES = 120
SPANS = 10
COST = 0.000017  # $ per span: 17,000 nano-USD


async def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("mode", ["buffer", "block"])
async def test_redis_killed_and_restarted_midstream_counts_every_batch_once(tmp_path: Path, mode: str) -> None:
    svc = start_local_redis(appendonly=True)
    port, workdir = svc.port, svc.workdir
    clock = Clock()
    cfg = sink_config(
        svc.url,
        key_prefix=f"r{uuid.uuid4().hex[:8]}",
        unavailable=mode,
        redis={"url": svc.url, "socket_timeout": 0.5, "connect_timeout": 0.5},
    )
    ctx = context(tmp_path)
    sink = BudgetsSink("budgets", cfg, ctx, clock=clock)
    await sink.start()
    chain = Chain(
        [PipelineRun("traces", [], ["budgets"])],
        {"budgets": sink},
        ctx.telemetry,
        retry=RetryConfig(initial_backoff=0.02, max_backoff=0.1),
        logger=logging.getLogger("test.budgets.chain"),
    )
    done = 0
    killed = asyncio.Event()

    async def stream() -> None:
        nonlocal done
        for i in range(BATCHES):
            spans = [llm_span(cost=COST, tokens=(3, 2), user="rex", tier="pro") for _ in range(SPANS)]
            await chain.run(batch(spans, batch_id=f"q-{i}"))
            # Redeliver some batches, as a worker restart would: they must not count again.
            if i % 10 == 0:
                await chain.run(batch(spans, batch_id=f"q-{i}"))
            done += 1
            if done == BATCHES // 3:
                killed.set()
            await asyncio.sleep(0)

    writer = asyncio.create_task(stream())
    try:
        await killed.wait()
        svc.process.kill()  # type: ignore[union-attr]
        svc.process.wait()  # type: ignore[union-attr]
        reg = ctx.telemetry.registry

        def failed_while_down() -> bool:
            if mode == "buffer":
                return (reg.get_sample_value("tracepipe_budget_buffered_batches", {"sink": "budgets"}) or 0) >= 5
            return (reg.get_sample_value("tracepipe_sink_retries_total", {"sink": "budgets"}) or 0) >= 3

        await _wait_for(failed_while_down)
        if mode == "buffer":
            assert done > BATCHES // 3  # spans kept flowing while Redis was down
        svc = start_local_redis(port=port, workdir=workdir, appendonly=True)
        await asyncio.wait_for(writer, 60)
        assert await sink.wait_drained(30)
        [st] = [s for s in await read_status(sink.store, sink.budgets, "user", "rex", clock()) if s.period == "day"]
        assert st.spans == BATCHES * SPANS
        assert st.spent_tokens == BATCHES * SPANS * 5
        assert round(st.spent_usd * 1e9) == BATCHES * SPANS * 17_000
    finally:
        writer.cancel()
        await sink.close()
        svc.stop()


async def test_sink_starts_and_acks_while_redis_is_not_up_yet(tmp_path: Path) -> None:
    from pipeline.budgets.guard import BudgetGuard
    from tests.services import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    clock = Clock()
    cfg = sink_config(url, key_prefix="late", redis={"url": url, "socket_timeout": 0.5, "connect_timeout": 0.5})
    sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
    await sink.start()  # does not fail: Redis may come up after tracepipe
    for i in range(5):
        await sink.write(batch([llm_span(cost=0.05, user="val", tier="free")], batch_id=f"early-{i}"))
    assert not await sink.wait_drained(0.05)
    svc = start_local_redis(port=port)
    try:
        assert await sink.wait_drained(30)
        [st] = [s for s in await read_status(sink.store, sink.budgets, "user", "val", clock()) if s.period == "day"]
        assert st.spans == 5 and round(st.spent_usd, 6) == 0.25
        guard = BudgetGuard(url, key_prefix="late", clock=clock)  # definitions were published once Redis came up
        assert not guard.check(user="val", tier="free").allowed
        guard.close()
    finally:
        await sink.close()
        svc.stop()
