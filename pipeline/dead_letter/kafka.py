"""The distributed dead-letter publisher: one Kafka message per dead letter.

Message value: the spans as OTLP `ExportTraceServiceRequest` protobuf (the same encoding as
the spans topic, so any OTLP/Kafka tool reads it and it can be fed back to the spans topic
to replay). Key: the entry id. Headers (UTF-8): `tracepipe.reason`, `tracepipe.component`,
`tracepipe.kind`, `tracepipe.pipeline`, `tracepipe.error`, `tracepipe.batch_id`,
`tracepipe.at` (unix seconds), `tracepipe.spans` and, for a replay that failed again,
`tracepipe.replay_of`.

The worker builds one with its Kafka settings and hands it to the chain:

    chain.dead_letter = await KafkaDeadLetterPublisher.start_new(config.transport.kafka)
    ...
    await chain.dead_letter.close()  # at shutdown, after the chain closed

`publish` returns once Kafka acknowledged the message (acks as the transport config says);
a failure raises, and the chain counts the spans as dropped (reason `dead_letter_failed`)
rather than waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipeline.config import KafkaTransportConfig
from pipeline.dead_letter import DeadLetter
from pipeline.dead_letter.store import new_id
from pipeline.transport.kafka_common import client_kwargs


def headers_of(entry: DeadLetter) -> list[tuple[str, bytes]]:
    values = {
        "tracepipe.reason": entry.reason,
        "tracepipe.component": entry.component,
        "tracepipe.kind": entry.kind,
        "tracepipe.pipeline": entry.pipeline,
        "tracepipe.error": entry.error,
        "tracepipe.batch_id": entry.batch_id,
        "tracepipe.at": repr(entry.at),
        "tracepipe.spans": str(entry.spans),
    }
    if entry.replay_of:
        values["tracepipe.replay_of"] = entry.replay_of
    return [(k, v.encode()) for k, v in values.items()]


def entry_from_message(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> DeadLetter:
    """A consumed dead-letter message back as an entry."""
    h = {k: v.decode(errors="replace") for k, v in headers}
    return DeadLetter(
        request=value,
        spans=int(h.get("tracepipe.spans", "0")),
        reason=h.get("tracepipe.reason", "rejected"),
        component=h.get("tracepipe.component", ""),
        kind=h.get("tracepipe.kind", "sink"),
        pipeline=h.get("tracepipe.pipeline", ""),
        error=h.get("tracepipe.error", ""),
        batch_id=h.get("tracepipe.batch_id", ""),
        at=float(h.get("tracepipe.at", "0")),
        replay_of=h.get("tracepipe.replay_of"),
        id=(key or b"").decode(errors="replace"),
    )


class KafkaDeadLetterPublisher:
    """A `DeadLetterPublisher` writing to `transport.kafka.dead_letter_topic`."""

    def __init__(self, cfg: KafkaTransportConfig, producer: Any, topic: str | None = None) -> None:
        self.cfg = cfg
        self.topic = topic or cfg.dead_letter_topic
        self._producer = producer

    @classmethod
    async def start_new(
        cls, cfg: KafkaTransportConfig, topic: str | None = None, *, ensure_topic: bool = True
    ) -> KafkaDeadLetterPublisher:
        """A started publisher; with `ensure_topic` the topic is created (one partition) when
        missing, or verified when `create_topics` is false."""
        from aiokafka import AIOKafkaProducer

        if ensure_topic:
            from pipeline.transport.kafka_common import ensure_topics

            await ensure_topics(cfg, {topic or cfg.dead_letter_topic: 1})

        producer = AIOKafkaProducer(
            **client_kwargs(cfg, "dead-letter"),
            acks="all" if cfg.acks == "all" else int(cfg.acks),
            enable_idempotence=cfg.enable_idempotence,
            compression_type=None if cfg.compression == "none" else cfg.compression,
            max_request_size=cfg.max_request_bytes,
            request_timeout_ms=int(cfg.produce_timeout * 1000),
            **cfg.producer_options,
        )
        await asyncio.wait_for(producer.start(), cfg.produce_timeout * 3)
        return cls(cfg, producer, topic)

    async def publish(self, entry: DeadLetter) -> None:
        if not entry.id:
            entry.id = new_id()
        async with asyncio.timeout(self.cfg.produce_timeout):
            fut = await self._producer.send(self.topic, entry.request, key=entry.id.encode(),
                                            headers=headers_of(entry))
            await fut

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._producer.stop(), self.cfg.produce_timeout + 5)
