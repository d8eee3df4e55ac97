"""The embedded queue under contention, cancellations and event-loop freezes (a profiler, CPU
throttling): every offer is answered, nothing raises, and no capacity leaks."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport, Offer
from pipeline.transport.wal import WriteAheadLog


@pytest.mark.parametrize("with_wal", [False, True])
async def test_offers_under_freezes_and_cancellations_are_all_answered_and_leak_nothing(
    tmp_path: Path, with_wal: bool
) -> None:
    rng = random.Random(3)
    wal = WriteAheadLog(tmp_path / "wal", max_bytes=1 << 26, segment_bytes=1 << 16, fsync="batch") if with_wal else None
    q = MemoryTransport(5_000, Telemetry(), wal=wal)
    q.load_replay()
    req = ExportTraceServiceRequest()
    outcomes: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = asyncio.Event()
    slots = asyncio.Semaphore(2)
    in_flight: set[asyncio.Future[None]] = set()

    async def client() -> None:
        for _ in range(40):
            task = asyncio.ensure_future(q.offer(req, rng.choice([60, 300, 510]), timeout=0.2))
            if rng.random() < 0.15:  # the client goes away mid-request
                await asyncio.sleep(rng.random() * 0.1)
                task.cancel()
            try:
                result = await task
                outcomes[result.name] = outcomes.get(result.name, 0) + 1
            except asyncio.CancelledError:
                outcomes["cancelled"] = outcomes.get("cancelled", 0) + 1
            except Exception as e:
                errors.append(e)

    async def handle(batch) -> None:
        try:
            await q.persist_taken()
            await asyncio.sleep(rng.random() * 0.02)
        finally:
            await q.release(batch)
            slots.release()

    async def worker() -> None:
        while True:
            await slots.acquire()
            batch = await q.take(2_000, rng.choice([0.0, 0.01, 0.05]), idle_timeout=0.05)
            if batch is None:
                slots.release()
                return
            if not batch.items:
                slots.release()
                continue
            t = asyncio.ensure_future(handle(batch))
            in_flight.add(t)
            t.add_done_callback(in_flight.discard)

    async def freezer() -> None:
        while not stop.is_set():
            await asyncio.sleep(rng.random() * 0.05)
            time.sleep(rng.random() * 0.1)  # the fault: the whole loop stops

    w = asyncio.ensure_future(worker())
    f = asyncio.ensure_future(freezer())
    clients = [asyncio.ensure_future(client()) for _ in range(100)]
    _done, pending = await asyncio.wait(clients, timeout=120)
    stop.set()
    await f
    assert not pending, f"{len(pending)} clients never answered"
    assert not errors, errors[:3]
    assert outcomes.get("ACCEPTED", 0) > 0 and outcomes.get("FULL", 0) > 0
    await q.close()
    await asyncio.wait_for(w, 60)
    await asyncio.gather(*in_flight)
    assert q.size == 0
    assert await asyncio.wait_for(q.offer(req, 5_000), 5) is Offer.CLOSED
    await q.close_log()
