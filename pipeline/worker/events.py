"""Derived events of the distributed worker (anomalies, ...) go to Kafka as JSON.

Every derived event is an alert: the worker's components emit through the alert router
(pipeline/alerts/router.py), whose publisher this is. `publish(kind, event)` sends the event
to `transport.kafka.alerts_topic` and, when its kind is not plain "alert", also to
`<events_topic_prefix><kind>` (`tracepipe.events.anomaly`), so consumers of one kind of
event read that kind alone. An events topic is created (one partition, like the alerts
topic) the first time its kind is sent, unless `create_topics` is false; then it must exist.

`emit(kind, event)` is the same without a router (sends started at once); `emit_record` sends
one raw record to a given partition (anomaly pane contributions). The worker awaits `drain()`
and the router's `flush()` before it acks a batch, so an event or record is at least once with
the batch that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pipeline.alerts.router import ALERT_KIND
from pipeline.config import KafkaTransportConfig
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_common import client_kwargs, ensure_topics

log = logging.getLogger("tracepipe.worker.events")


class KafkaEventPublisher:
    def __init__(self, cfg: KafkaTransportConfig, telemetry: Telemetry) -> None:
        self.cfg = cfg
        self.telemetry = telemetry
        self._producer: Any = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._ready_topics: set[str] = {cfg.alerts_topic}  # the worker creates the alerts topic at start
        self._topics_lock = asyncio.Lock()

    def topics_for(self, kind: str) -> list[str]:
        """The alerts topic, plus `<events_topic_prefix><kind>` for a kind other than "alert"."""
        if kind in (ALERT_KIND, "alerts"):
            return [self.cfg.alerts_topic]
        return [self.cfg.alerts_topic, f"{self.cfg.events_topic_prefix}{kind}"]

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        kwargs: dict[str, Any] = {
            **client_kwargs(self.cfg, "events"),
            "acks": "all" if self.cfg.acks == "all" else int(self.cfg.acks),
            "enable_idempotence": self.cfg.enable_idempotence,
            "request_timeout_ms": int(self.cfg.produce_timeout * 1000),
        }
        kwargs.update({k: v for k, v in self.cfg.producer_options.items() if k in ("max_batch_size", "linger_ms")})
        self._producer = AIOKafkaProducer(**kwargs)
        await self._producer.start()

    def emit(self, kind: str, event: dict[str, Any]) -> None:
        if self._producer is None:
            log.error("event of kind %s emitted before the publisher started; dropped", kind)
            return
        fut = asyncio.ensure_future(self.publish(kind, event))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def emit_record(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        """Send one record to `partition` of `topic` (created by the worker), awaited by `drain()`
        like the events: anomaly pane contributions (pipeline/worker/anomaly_panes.py)."""
        if self._producer is None:
            raise RuntimeError(f"record for {topic} emitted before the publisher started")
        self._ready_topics.add(topic)
        fut = asyncio.ensure_future(self._send(topic, key, value, partition))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        """Send `event` to its topics and wait for the acks (raises if a send failed)."""
        value = json.dumps(event, default=str, separators=(",", ":")).encode()
        key = str(event.get("fingerprint") or event.get("rule") or kind).encode()  # one alert's states in order
        results = await asyncio.gather(*(self._send(topic, key, value) for topic in self.topics_for(kind)),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        if topic not in self._ready_topics:
            async with self._topics_lock:
                if topic not in self._ready_topics:
                    await ensure_topics(self.cfg, {topic: 1}, timeout=self.cfg.produce_timeout)
                    self._ready_topics.add(topic)
        await (await self._producer.send(topic, value, key=key, partition=partition))
        self.telemetry.kafka_events_published.labels(topic).inc()

    async def broker_reachable(self) -> bool:
        """Whether a metadata request through this producer names at least one broker."""
        if self._producer is None:
            return False
        md = await self._producer.client.fetch_all_metadata()
        return bool(md.brokers())

    async def drain(self) -> None:
        """Wait for every event emitted so far to be acknowledged (raises if one failed)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.drain(), self.cfg.produce_timeout)
        except Exception:
            log.exception("some derived events could not be published before shutdown")
        if self._producer is not None:
            await self._producer.stop()
