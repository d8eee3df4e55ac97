"""The checks behind /healthz and /readyz: watchdog thread, stall and failing-sink readiness."""

from __future__ import annotations

import asyncio
import threading
import time

from pipeline.runtime_health import RuntimeHealth
from pipeline.telemetry import Telemetry


def make(queued: int = 0, failing: dict[str, float] | None = None, **kw: float) -> RuntimeHealth:
    opts = {"stall_timeout": 30.0, "watchdog_timeout": 10.0, **kw}
    return RuntimeHealth(Telemetry(), queued=lambda: queued, failing_sinks=lambda: failing or {}, **opts)


async def test_a_blocked_event_loop_is_seen_by_the_watchdog_thread() -> None:
    h = make(watchdog_timeout=0.3)
    h.start()
    seen: list[tuple[bool, str]] = []
    done = threading.Event()

    def probe_from_outside() -> None:
        while not done.is_set() and not seen:
            if h.loop_stalls:
                seen.append(h.event_loop())
            time.sleep(0.05)

    t = threading.Thread(target=probe_from_outside)
    t.start()
    time.sleep(2.5)  # the fault: block the event loop (a synchronous call in a coroutine)
    done.set()
    t.join(5)
    await asyncio.sleep(0.6)  # let the heartbeat beat again
    try:
        assert h.loop_stalls >= 1
        assert seen and seen[0][0] is False and "late" in seen[0][1]
        assert h.event_loop()[0] is True  # it recovered
    finally:
        await h.stop()


def test_readiness_fails_when_spans_wait_and_no_batch_completed_for_the_stall_timeout() -> None:
    h = make(queued=500, stall_timeout=30)
    assert h.delivery()[0] is True
    h.last_completed -= 31
    ok, detail = h.delivery()
    assert ok is False and "stalled" in detail
    h.batch_completed()
    assert h.delivery()[0] is True
    assert h.telemetry.registry.get_sample_value("tracepipe_last_batch_completed_timestamp_seconds") > 0


def test_an_empty_queue_is_not_a_stall() -> None:
    h = make(queued=0, stall_timeout=30)
    h.last_completed -= 3600
    assert h.delivery()[0] is True


def test_readiness_fails_while_a_sink_is_failing() -> None:
    ok, detail = make(failing={"clickhouse": time.monotonic() - 5}).delivery()
    assert ok is False and "clickhouse" in detail


def test_liveness_fails_when_the_worker_stopped_taking_with_spans_waiting() -> None:
    h = make(watchdog_timeout=10)
    h.take_since = time.monotonic() - 11
    assert h.worker_taking(waiting=0)[0] is True
    assert h.worker_taking(waiting=10)[0] is False
    h.take_since = None
    assert h.worker_taking(waiting=10)[0] is True
