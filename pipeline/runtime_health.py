"""Health that tells the truth: the checks behind /healthz and /readyz of a runtime.

Readiness (`/readyz`, "take me out of the load balancer"):
- `delivery`: fails when spans are queued and no batch completed for `stall_timeout`
  seconds (a stalled sink or worker), or while a sink is failing (its last write failed and
  is being retried).
Liveness (`/healthz`, "restart me"):
- `event_loop`: a heartbeat task beats every 0.5 s; a watchdog thread checks it every
  second and, when it is older than `watchdog_timeout`, logs where the loop's thread is
  stuck (once per stall) and counts the stall. The check fails while the heartbeat is late
  (a loop blocked outright cannot answer at all, which a probe's timeout also reports).
- `worker`: fails when the worker loop has been waiting in `take` with spans queued for
  longer than `watchdog_timeout` (it stopped taking), or ended.

`tracepipe_last_batch_completed_timestamp_seconds` gives the unix time of the last
completed batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

from pipeline.telemetry import Telemetry

log = logging.getLogger("tracepipe.health")

HEARTBEAT = 0.5


class RuntimeHealth:
    def __init__(
        self,
        telemetry: Telemetry,
        *,
        stall_timeout: float,
        watchdog_timeout: float,
        queued: Callable[[], int],
        failing_sinks: Callable[[], dict[str, float]],
    ) -> None:
        self.telemetry = telemetry
        self.stall_timeout = stall_timeout
        self.watchdog_timeout = watchdog_timeout
        self._queued = queued
        self._failing = failing_sinks
        now = time.monotonic()
        self.last_completed = now
        self.beat = now
        self.loop_stalls = 0
        self.take_since: float | None = None  # set while the worker waits in take()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread_id = threading.get_ident()

    # --- called by the runtime ---------------------------------------------------------

    def batch_completed(self) -> None:
        self.last_completed = time.monotonic()
        self.telemetry.last_batch_completed.set(time.time())

    def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self.beat = time.monotonic()
        self._task = asyncio.create_task(self._heartbeat(), name="tracepipe-heartbeat")
        self._thread = threading.Thread(target=self._watch, name="tracepipe-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    async def _heartbeat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT)

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(1.0):
            lag = time.monotonic() - self.beat
            if lag <= self.watchdog_timeout:
                reported = False
                continue
            if reported:
                continue
            reported = True
            self.loop_stalls += 1
            frame = sys._current_frames().get(self._loop_thread_id)
            where = "".join(traceback.format_stack(frame, limit=12)) if frame is not None else "unknown"
            log.error("watchdog: the event loop made no progress for %.1fs; it is at:\n%s", lag, where[-4000:])

    # --- checks ------------------------------------------------------------------------

    def delivery(self) -> tuple[bool, str]:
        failing = self._failing()
        if failing:
            now = time.monotonic()
            worst = max(now - t for t in failing.values())
            return False, f"sink(s) failing, retrying: {', '.join(sorted(failing))} (for {worst:.0f}s)"
        queued = self._queued()
        idle = time.monotonic() - self.last_completed
        if queued > 0 and idle > self.stall_timeout:
            return False, f"stalled: {queued} spans queued and no batch completed for {idle:.0f}s"
        return True, f"{queued} spans queued, last batch {idle:.0f}s ago"

    def event_loop(self) -> tuple[bool, str]:
        lag = time.monotonic() - self.beat
        if lag > self.watchdog_timeout:
            return False, f"event loop heartbeat {lag:.1f}s late ({self.loop_stalls} stall(s) seen)"
        return True, f"heartbeat {lag:.1f}s ago ({self.loop_stalls} stall(s) seen)"

    def worker_taking(self, waiting: int) -> tuple[bool, str]:
        since = self.take_since
        if since is not None and waiting > 0 and time.monotonic() - since > self.watchdog_timeout:
            return False, f"worker waits in take for {time.monotonic() - since:.0f}s with {waiting} spans waiting"
        return True, "taking"
