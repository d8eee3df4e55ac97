"""WebhookNotifier: POSTs alert events to an HTTP endpoint (Slack-compatible or plain JSON).

Never blocks the span path: `notify(event)` only appends to a bounded queue (a full
queue drops its oldest event, counted in `tracepipe_alert_events_dropped_total`), and
one background task delivers events in order. Each attempt has a timeout; 5xx, 408,
429, timeouts and connection errors are retried with exponential backoff and jitter
(honouring Retry-After), other 4xx are rejections and are not retried. After a 2xx the
event is done: it is never posted again. Every request carries `Idempotency-Key: <event
id>`, so a receiver can drop the duplicate that a timed-out-but-processed attempt
followed by a retry would produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from pipeline.alerts.config import WebhookConfig
from pipeline.alerts.format import render
from pipeline.anomaly.config import SEVERITY_ORDER
from pipeline.telemetry import Telemetry

log = logging.getLogger("tracepipe.alerts.webhook")

RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookNotifier:
    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        telemetry: Telemetry,
        *,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.config = config
        self.telemetry = telemetry
        self._jitter = jitter
        self._sleep = sleep
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._min_severity = SEVERITY_ORDER[config.min_severity]
        self.delivered = 0
        self.failed = 0

    def _count(self, outcome: str) -> None:
        self.telemetry.alert_notifications.labels(self.name, outcome).inc()

    # --- the non-blocking side -----------------------------------------------------------

    def notify(self, event: dict[str, Any]) -> None:
        """Queue an event for delivery; returns at once."""
        if SEVERITY_ORDER.get(str(event.get("severity")), 0) < self._min_severity:
            self._count("filtered")
            return
        if len(self._queue) >= self.config.queue_size:
            self._queue.popleft()
            self.telemetry.alert_events_dropped.labels(self.name).inc()
        self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "tracepipe-alerts"})
            self._task = asyncio.create_task(self._run(), name=f"tracepipe-{self.name}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued was delivered or given up; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to `timeout` seconds, then stop."""
        if self._task is not None:
            if self._queue and not await self.flush(timeout):
                log.warning("%s: %d alert event(s) not delivered at shutdown", self.name, len(self._queue))
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- delivery ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            event = self._queue.popleft()
            try:
                await self.deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one event stop the notifier
                log.exception("%s: delivering an alert event failed unexpectedly", self.name)

    async def deliver(self, event: dict[str, Any]) -> bool:
        """POST one event with retries. True once a 2xx was received."""
        cfg = self.config
        assert self._session is not None, "start() the notifier first"
        body = json.dumps(render(event, cfg.format), default=str).encode()
        headers = {"Content-Type": "application/json", **cfg.headers}
        if event.get("id"):
            headers["Idempotency-Key"] = str(event["id"])
        backoff = cfg.initial_backoff
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                async with self._session.post(
                    cfg.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=cfg.timeout)
                ) as resp:
                    status = resp.status
                    await resp.read()
                    if 200 <= status < 300:
                        self.delivered += 1
                        self._count("delivered")
                        return True
                    if status not in RETRY_STATUSES and status < 500:
                        self.failed += 1
                        self._count("rejected")
                        log.error("%s: endpoint rejected an alert event with HTTP %d (not retried)", self.name, status)
                        return False
                    ra = resp.headers.get("Retry-After", "")
                    retry_after = float(ra) if ra.replace(".", "", 1).isdigit() else None
                    reason = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as e:
                reason = type(e).__name__
            if attempt > cfg.max_retries:
                self.failed += 1
                self._count("failed")
                log.error("%s: giving up on an alert event after %d attempts (%s)", self.name, attempt, reason)
                return False
            self._count("retry")
            delay = min(cfg.max_backoff, backoff) * (0.5 + 0.5 * self._jitter())
            if retry_after is not None:
                delay = min(cfg.max_backoff, max(delay, retry_after))
            log.warning(
                "%s: alert delivery attempt %d failed (%s), retrying in %.2fs", self.name, attempt, reason, delay
            )
            await self._sleep(delay)
            backoff *= 2
