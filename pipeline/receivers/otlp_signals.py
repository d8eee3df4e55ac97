"""What the OTLP receivers do with logs and metrics, independent of the protocol.

Logs (`LogsService/Export`, `POST /v1/logs`):
    count -> refuse if over max_spans_per_request (the per-request item limit, shared with
    traces) -> sanitize (partial success for records with a malformed trace or span id or
    too many attributes) -> offer to the logs destination (`LogsDestination`: the
    embedded logs store, or the Kafka logs topic in distributed mode) -> an `ExportResult`
    the gRPC and HTTP receivers map onto their status codes, exactly as for traces.
    Without a destination (no clickhouse sink configured) the records are counted and dropped.

Metrics (`MetricsService/Export`, `POST /v1/metrics`): data points are counted and
acknowledged, not stored; the GenAI client histograms among them are re-exposed on /metrics
(pipeline/genai_client_metrics.py).

Telemetry (labelled by receiver id): `receiver_accepted_log_records{receiver}`,
`receiver_refused_log_records{receiver,reason}` (invalid, too_many_records, queue_full,
closed, transport_unavailable, transport_error, too_large), `receiver_accepted_data_points
{receiver}`, `receiver_refused_data_points{receiver,reason}` (too_many_points) and
`genai_log_records{event}` (event name for `gen_ai.*` events, `other` for the rest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pipeline.config import OtlpReceiverConfig
from pipeline.receivers.otlp_export import Outcome
from pipeline.telemetry import Telemetry
from pipeline.transport import Offer

# The GenAI event names counted by name (anything else under gen_ai.* counts as gen_ai.other).
GENAI_EVENTS = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.client.inference.operation.details",
        "gen_ai.evaluation.result",
    }
)
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


class LogsDestination(Protocol):
    """Where accepted log records go. `offer` answers ACCEPTED only once they are durable."""

    async def offer(self, request: ExportLogsServiceRequest, records: int, timeout: float = 0.0) -> Offer: ...


@dataclass
class SignalResult:
    outcome: Outcome
    response: Message
    message: str = ""

    @property
    def partial(self) -> bool:
        return self.response.HasField("partial_success")


def genai_event_name(record: Any) -> str:
    """The event name of a log record: `event_name`, else the older `event.name` attribute."""
    if record.event_name:
        return str(record.event_name)
    for kv in record.attributes:
        if kv.key == "event.name":
            return kv.value.string_value
    return ""


def count_log_records(req: ExportLogsServiceRequest) -> int:
    return sum([len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs])


def count_data_points(req: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


def sanitize_logs(req: ExportLogsServiceRequest, max_attributes: int) -> tuple[int, dict[str, int]]:
    """Remove, in place, log records no store could join or keep correctly: a trace id that is
    neither empty nor 16 bytes, a span id neither empty nor 8 bytes, or more attributes than
    allowed. Empty (or all-zero) ids are fine: the record is not tied to a span.
    Returns (accepted records, {reason: rejected records})."""
    reasons: dict[str, int] = {}
    accepted = 0
    for rl in list(req.resource_logs):
        for sl in list(rl.scope_logs):
            records = sl.log_records
            bad: list[int] = []
            for i, rec in enumerate(records):
                if len(rec.trace_id) not in (0, 16):
                    reason = "invalid_trace_id"
                elif len(rec.span_id) not in (0, 8):
                    reason = "invalid_span_id"
                elif len(rec.attributes) > max_attributes:
                    reason = "too_many_attributes"
                else:
                    continue
                bad.append(i)
                reasons[reason] = reasons.get(reason, 0) + 1
            for i in reversed(bad):
                del records[i]
            accepted += len(records)
            if not records:
                rl.scope_logs.remove(sl)
        if not rl.scope_logs:
            req.resource_logs.remove(rl)
    return accepted, reasons


_REASONS = {
    "invalid_trace_id": "an invalid trace id (must be empty or 16 bytes)",
    "invalid_span_id": "an invalid span id (must be empty or 8 bytes)",
    "too_many_attributes": "more than {max} attributes",
}
_OFFER_OUTCOMES = {
    Offer.FULL: (Outcome.RETRY_FULL, "the logs store is busy; retry later"),
    Offer.CLOSED: (Outcome.RETRY_UNAVAILABLE, "the receiver is shutting down; retry later"),
    Offer.UNAVAILABLE: (Outcome.RETRY_UNAVAILABLE, "the logs store is unavailable; retry later"),
}


class SignalHandler:
    """The protocol-independent part of the logs and metrics receivers of one OTLP receiver."""

    def __init__(
        self,
        receiver_id: str,
        cfg: OtlpReceiverConfig,
        telemetry: Telemetry,
        logs: LogsDestination | None,
        logger: logging.Logger,
    ) -> None:
        self.receiver_id = receiver_id
        self.cfg = cfg
        self.telemetry = telemetry
        self.logs = logs
        self.log = logger
        self._accepted_logs = telemetry.receiver_accepted_log_records.labels(receiver_id)
        self._accepted_points = telemetry.receiver_accepted_data_points.labels(receiver_id)

    def _refuse_logs(self, reason: str, n: int) -> None:
        if n > 0:
            self.telemetry.receiver_refused_log_records.labels(self.receiver_id, reason).inc(n)

    def _count_events(self, req: ExportLogsServiceRequest) -> None:
        counts: dict[str, int] = {}
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    name = genai_event_name(rec)
                    if name.startswith("gen_ai."):
                        key = name if name in GENAI_EVENTS else "gen_ai.other"
                        counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            self.telemetry.genai_log_records.labels(key).inc(n)

    async def export_logs(self, req: ExportLogsServiceRequest) -> SignalResult:
        cfg = self.cfg
        total = count_log_records(req)
        if total > cfg.max_spans_per_request:
            self._refuse_logs("too_many_records", total)
            return SignalResult(
                Outcome.TOO_LARGE,
                ExportLogsServiceResponse(),
                f"request has {total} log records, more than max_spans_per_request ({cfg.max_spans_per_request})",
            )
        accepted, reasons = sanitize_logs(req, cfg.max_attributes_per_span)
        resp = ExportLogsServiceResponse()
        if reasons:
            rejected = sum(reasons.values())
            parts = [
                f"{n} with " + _REASONS[r].format(max=cfg.max_attributes_per_span)
                for r, n in sorted(reasons.items(), key=lambda x: -x[1])
            ]
            resp.partial_success.rejected_log_records = rejected
            resp.partial_success.error_message = f"{rejected} log record(s) rejected: " + "; ".join(parts)
            self._refuse_logs("invalid", rejected)
        if accepted == 0:
            return SignalResult(Outcome.ACCEPTED, resp)
        self._count_events(req)
        if self.logs is None:  # nowhere to store them: counted, acknowledged, dropped (documented)
            self._accepted_logs.inc(accepted)
            return SignalResult(Outcome.ACCEPTED, resp)
        try:
            offer = await self.logs.offer(req, accepted, timeout=cfg.enqueue_timeout)
        except Exception:
            self.log.exception("receiver %s: storing %d log records failed", self.receiver_id, accepted)
            self._refuse_logs("transport_error", accepted)
            return SignalResult(Outcome.RETRY_UNAVAILABLE, resp, "storing the log records failed; retry later")
        if offer is Offer.ACCEPTED:
            self._accepted_logs.inc(accepted)
            return SignalResult(Outcome.ACCEPTED, resp)
        self._refuse_logs(offer.value, accepted)
        if offer is Offer.TOO_LARGE:
            return SignalResult(Outcome.TOO_LARGE, resp, f"request of {accepted} log records is too large; split it")
        outcome, message = _OFFER_OUTCOMES.get(offer, (Outcome.RETRY_UNAVAILABLE, f"refused: {offer.value}"))
        return SignalResult(outcome, resp, message)

    async def export_metrics(self, req: ExportMetricsServiceRequest) -> SignalResult:
        total = count_data_points(req)
        if total > self.cfg.max_spans_per_request:
            self.telemetry.receiver_refused_data_points.labels(self.receiver_id, "too_many_points").inc(total)
            return SignalResult(
                Outcome.TOO_LARGE,
                ExportMetricsServiceResponse(),
                f"request has {total} data points, more than max_spans_per_request "
                f"({self.cfg.max_spans_per_request})",
            )
        try:  # gen_ai.client.* histograms -> tracepipe_genai_client_* on /metrics
            self.telemetry.genai_client.observe(req)
        except Exception:
            self.log.exception("receiver %s: folding GenAI client metrics failed", self.receiver_id)
        self._accepted_points.inc(total)
        return SignalResult(Outcome.ACCEPTED, ExportMetricsServiceResponse())


def signal_handler_of(receiver: Any) -> SignalHandler:
    """The receiver's SignalHandler, created on first use from its `signals_logs` destination
    (set by the runtime through `build_receivers`; None: logs are counted and dropped)."""
    handler = getattr(receiver, "_signal_handler", None)
    if handler is None:
        logs = getattr(receiver, "signals_logs", None)
        handler = SignalHandler(receiver.receiver_id, receiver.cfg, receiver.telemetry, logs, receiver.log)
        receiver._signal_handler = handler
    return handler
