"""Derived events (alerts, ...) of the distributed worker go to their own Kafka topics.

`emit(kind, event)` is the chain's `emit_event`: kind "alert" goes to
`transport.kafka.alerts_topic`, other kinds to `<events_topic_prefix><kind>`, as JSON.
Sends are started at once; the worker awaits `drain()` before it acks a batch, so an
event is at least once with the batch that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pipeline.config import KafkaTransportConfig
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_common import client_kwargs

log = logging.getLogger("tracepipe.worker.events")


class KafkaEventPublisher:
    def __init__(self, cfg: KafkaTransportConfig, telemetry: Telemetry) -> None:
        self.cfg = cfg
        self.telemetry = telemetry
        self._producer: Any = None
        self._pending: set[asyncio.Future[Any]] = set()

    def topic_for(self, kind: str) -> str:
        return self.cfg.alerts_topic if kind in ("alert", "alerts") else f"{self.cfg.events_topic_prefix}{kind}"

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
        topic = self.topic_for(kind)
        value = json.dumps(event, default=str, separators=(",", ":")).encode()
        key = str(event.get("key") or event.get("rule") or kind).encode()
        fut = asyncio.ensure_future(self._send(topic, key, value))
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def publish(self, kind: str, event: dict[str, Any]) -> None:
        """Async form for alert routers: send and wait for the ack."""
        await self._send(self.topic_for(kind), str(event.get("rule") or kind).encode(),
                         json.dumps(event, default=str, separators=(",", ":")).encode())

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        await (await self._producer.send(topic, value, key=key))
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
