"""The receiver's Kafka destination for OTLP logs (distributed mode, `tracepipe receiver`).

Log records go to the topic `transport.kafka.logs_topic` (default `otlp_logs`, the OTel
Collector kafka exporter's default logs topic) as protobuf ExportLogsServiceRequest, one
message per trace (resource and scope wrappers kept), keyed by the trace id in lowercase hex
like the spans topic; records without a trace id go in one message without a key. The
exporter's `otlp_proto` encoding, so a collector's kafka receiver can read the topic.

It is the span transport's producer (pipeline/transport/kafka_producer.py) on another topic,
with the same contract: ACCEPTED only once Kafka acknowledged every message (acks=all),
FULL beyond `max_in_flight_spans` records awaiting acks, UNAVAILABLE when the broker is down.

Workers consume the topic (pipeline/logs_consumer.py): redaction, then `otel_logs`.
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs

from pipeline.config import KafkaTransportConfig
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_producer import KafkaRequestTransport
from pipeline.transport.memory import Offer

__all__ = ["KafkaLogsTransport", "split_logs_by_trace"]


def split_logs_by_trace(request: ExportLogsServiceRequest) -> list[tuple[bytes | None, bytes]]:
    """(key, value) per trace: key = trace id hex (None for records without one), value = the
    trace's records as an ExportLogsServiceRequest keeping their resource and scope wrappers."""
    groups: dict[bytes, dict[tuple[int, int], list[int]]] = {}
    for ri, rl in enumerate(request.resource_logs):
        for si, sl in enumerate(rl.scope_logs):
            for i, rec in enumerate(sl.log_records):
                tid = rec.trace_id if len(rec.trace_id) == 16 and any(rec.trace_id) else b""
                groups.setdefault(tid, {}).setdefault((ri, si), []).append(i)
    out: list[tuple[bytes | None, bytes]] = []
    for tid, parts in groups.items():
        msg = ExportLogsServiceRequest()
        by_resource: dict[int, ResourceLogs] = {}
        for (ri, si), idx in parts.items():
            src_rl = request.resource_logs[ri]
            rl = by_resource.get(ri)
            if rl is None:
                rl = by_resource[ri] = msg.resource_logs.add(schema_url=src_rl.schema_url)
                rl.resource.CopyFrom(src_rl.resource)
            src_sl = src_rl.scope_logs[si]
            sl: ScopeLogs = rl.scope_logs.add(schema_url=src_sl.schema_url)
            sl.scope.CopyFrom(src_sl.scope)
            sl.log_records.extend([src_sl.log_records[i] for i in idx])
        out.append((tid.hex().encode() if tid else None, msg.SerializeToString()))
    return out


class KafkaLogsTransport(KafkaRequestTransport):
    """LogsDestination over its own aiokafka producer on `logs_topic` (module doc)."""

    name = "kafka_logs"

    def __init__(self, cfg: KafkaTransportConfig, telemetry: Telemetry, probe_interval: float = 1.0) -> None:
        super().__init__(cfg, telemetry, probe_interval)
        self.topic = cfg.logs_topic
        telemetry.kafka_in_flight_spans.labels(self.topic).set(0)

    async def offer(self, request: ExportLogsServiceRequest, records: int, timeout: float = 0.0) -> Offer:  # type: ignore[override]
        if self._closed:
            return Offer.CLOSED
        t = self.telemetry
        if records > self.capacity:
            t.kafka_produce_failures.labels(self.topic, "too_large").inc()
            return Offer.TOO_LARGE
        if self._broker_down is not None or self._producer is None:
            t.kafka_produce_failures.labels(self.topic, "unavailable").inc()
            return Offer.UNAVAILABLE
        if not await self._reserve(records, timeout):
            if self._closed:
                return Offer.CLOSED
            t.kafka_produce_failures.labels(self.topic, "full").inc()
            return Offer.FULL
        try:
            messages = split_logs_by_trace(request) if records else []
            return await self._produce([(key, value, None) for key, value in messages])
        finally:
            await self._unreserve(records)
