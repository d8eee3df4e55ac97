"""AlertRouter: takes alert events from processors and fans them out, never blocking.

`publish(kind, event)` (also `emit`, the shape of `ComponentContext.emit_event`) is
synchronous and O(1) in the number of events queued:
- records the event in the `AlertStore` (GET /api/alerts) and in the Prometheus
  metrics (`tracepipe_alerts_active{rule,severity,alert}` is 1 while an alert is active
  and removed when it resolves; `tracepipe_alerts_total{rule,severity,state}`);
- hands it to each notifier (webhooks), which queue it themselves;
- appends it to a bounded channel that one background task drains into the
  `publishers`: extra async callables `(kind, event) -> None` (or objects with such a
  `publish` method), such as the Kafka event publisher of the distributed runtime
  (pipeline/worker/events.py: the alert on `tracepipe.alerts`, the event itself on
  `tracepipe.events.<kind>`); they receive the kind the component emitted ("anomaly").
  A full channel drops its oldest event (counted, stage="router").

Call it from the event loop's thread (processors run there in both runtimes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pipeline.alerts.config import AlertsConfig
from pipeline.alerts.store import AlertStore
from pipeline.telemetry import Telemetry

Publisher = Callable[[str, dict[str, Any]], Awaitable[None]]

# The kind of an event that is an alert and nothing else (no derived-events topic of its own).
ALERT_KIND = "alert"


def _as_callable(publisher: Any) -> Publisher:
    """A publisher is an async callable, or an object with an async `publish(kind, event)`."""
    if hasattr(publisher, "publish"):
        return publisher.publish  # type: ignore[no-any-return]
    if callable(publisher):
        return publisher  # type: ignore[no-any-return]
    raise TypeError(f"alert publisher {publisher!r} is neither callable nor has publish()")


log = logging.getLogger("tracepipe.alerts")


class Notifier(Protocol):
    name: str

    def notify(self, event: dict[str, Any]) -> None: ...

    async def start(self) -> None: ...

    async def flush(self, timeout: float | None = None) -> bool: ...

    async def close(self, timeout: float = 5.0) -> None: ...


class AlertRouter:
    def __init__(
        self,
        telemetry: Telemetry,
        *,
        store: AlertStore | None = None,
        notifiers: Sequence[Notifier] = (),
        publishers: Sequence[Publisher] = (),
        queue_size: int = 10_000,
    ) -> None:
        self.telemetry = telemetry
        self.store = store if store is not None else AlertStore()
        self.notifiers = list(notifiers)
        self.publishers: list[Publisher] = [_as_callable(p) for p in publishers]
        self.queue_size = queue_size
        self._channel: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls,
        config: AlertsConfig | None,
        telemetry: Telemetry,
        publishers: Sequence[Publisher] = (),
        store_path: str | Path | None = None,
    ) -> AlertRouter:
        """`store_path`: the JSONL file the store keeps its history in (None: memory only)."""
        from pipeline.alerts.webhook import WebhookNotifier

        config = config or AlertsConfig()
        notifiers = [WebhookNotifier(w.name or f"webhook/{i}", w, telemetry) for i, w in enumerate(config.webhooks)]
        return cls(
            telemetry,
            store=AlertStore(history=config.history, max_active=config.max_active, path=store_path),
            notifiers=notifiers,
            publishers=publishers,
            queue_size=config.queue_size,
        )

    # --- the non-blocking entry ----------------------------------------------------------

    def publish(self, kind: str, event: dict[str, Any]) -> None:
        """Record and fan out one event; returns at once."""
        t = self.telemetry
        rule = str(event.get("rule", kind))
        severity = str(event.get("severity", "info"))
        state = str(event.get("state", "firing"))
        changed, evicted = self.store.apply(event)
        t.alerts.labels(rule, severity, state).inc()
        fp = event.get("fingerprint")
        if fp and changed:
            if state == "firing":
                t.alerts_active.labels(rule, severity, fp).set(1)
            else:
                with contextlib.suppress(KeyError):
                    t.alerts_active.remove(rule, severity, fp)
        if evicted is not None:
            with contextlib.suppress(KeyError):
                t.alerts_active.remove(
                    str(evicted.get("rule")), str(evicted.get("severity")), str(evicted.get("fingerprint"))
                )
        for n in self.notifiers:
            n.notify(event)
        if self.publishers:
            if len(self._channel) >= self.queue_size:
                self._channel.popleft()
                t.alert_events_dropped.labels("router").inc()
            self._channel.append((kind, event))
            self._idle.clear()
            self._wake.set()

    emit = publish

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        for n in self.notifiers:
            await n.start()
        if self._task is None and self.publishers:
            self._task = asyncio.create_task(self._run(), name="tracepipe-alert-router")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until publishers and notifiers have handled everything queued."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                for n in self.notifiers:
                    await n.flush()
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        if self._task is not None:
            if self._channel and not await self.flush(timeout):
                log.warning("%d alert event(s) not published at shutdown", len(self._channel))
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for n in self.notifiers:
            await n.close(timeout)
        self.store.close()

    async def _run(self) -> None:
        while True:
            if not self._channel:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, event = self._channel.popleft()
            for publish in self.publishers:
                try:
                    await publish(kind, event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("an alert publisher failed; the event is lost for it")
                    self.telemetry.alert_events_dropped.labels("publisher").inc()
