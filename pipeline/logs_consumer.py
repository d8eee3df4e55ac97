"""The worker role's consumer of the Kafka logs topic (distributed mode).

`tracepipe worker` runs it next to its span consumer: an aiokafka consumer in the group
`<transport.kafka.group_id>.logs` on `transport.kafka.logs_topic` (`otlp_logs`). Each
message (an ExportLogsServiceRequest, as the receiver role or a collector's kafka exporter
writes it) goes through the same `LogsStore` as in the embedded runtime — the redact
processors of the trace pipeline writing to the query clickhouse sink, then the
`otel_logs` table — and offsets are committed only after the messages before them were
stored: at least once. Inserts are deduplicated by message content, so a redelivered
message is stored once (within the table's deduplication window). A store failure is
retried with backoff (the partition waits, nothing is skipped); a message that is not an
ExportLogsServiceRequest is counted in `tracepipe_kafka_malformed_messages_total{topic}` and
skipped. Messages taken count in `tracepipe_kafka_consumed_messages_total{topic}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline.config import Config
from pipeline.logs_store import LogsStore, build_logs_store
from pipeline.telemetry import Telemetry
from pipeline.transport import Offer
from pipeline.transport.kafka_common import client_kwargs, ensure_topics

log = logging.getLogger("tracepipe.logs_consumer")


class LogsConsumer:
    def __init__(self, config: Config, store: LogsStore, telemetry: Telemetry, max_records: int = 500) -> None:
        self.kcfg = config.transport.kafka
        self.topic = self.kcfg.logs_topic
        self.store = store
        self.telemetry = telemetry
        self.max_records = max_records
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        k = self.kcfg
        await ensure_topics(k, {self.topic: k.partitions})
        self._consumer = AIOKafkaConsumer(
            self.topic,
            **client_kwargs(k, "worker-logs"),
            group_id=f"{k.group_id}.logs",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="tracepipe-logs-consumer")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 30)

    async def _run(self) -> None:
        consumer = self._consumer
        while not self._stopping:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=self.max_records)
            except Exception as e:
                log.warning("logs consumer: fetch failed (%s); retrying", type(e).__name__)
                await asyncio.sleep(1)
                continue
            for tp, records in batches.items():
                self.telemetry.kafka_consumed_messages.labels(self.topic).inc(len(records))
                for rec in records:
                    await self._store(rec.value)
                await self._commit(tp, records[-1].offset + 1)

    async def _store(self, value: bytes | None) -> None:
        try:
            request = ExportLogsServiceRequest.FromString(value or b"")
        except (DecodeError, UnicodeDecodeError):
            self.telemetry.kafka_malformed_messages.labels(self.topic).inc()
            return
        backoff = 0.2
        while True:
            try:
                if await self.store.store(request) is Offer.ACCEPTED:
                    return
            except Exception as e:  # refused as bad data: keeping the partition stuck cannot help
                log.error("logs consumer: a message of %s was refused by the store (%s); skipped", self.topic,
                          type(e).__name__)
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _commit(self, tp: Any, offset: int) -> None:
        from aiokafka.structs import OffsetAndMetadata

        try:
            await self._consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except Exception as e:  # a rebalance: the partition's next owner re-reads (deduplicated)
            log.warning("logs consumer: commit on %s failed (%s)", tp, type(e).__name__)


async def start_logs_consumer(config: Config, chain: Any, telemetry: Telemetry) -> LogsConsumer | None:
    """Start the logs consumer of a worker (None without a clickhouse sink to store into)."""
    store = await build_logs_store(config, chain, telemetry)
    if store is None:
        log.info("no clickhouse sink: the logs topic %s is not consumed", config.transport.kafka.logs_topic)
        return None
    consumer = LogsConsumer(config, store, telemetry)
    await consumer.start()
    return consumer
