"""What both OTLP receivers do with a decoded export request, independent of the protocol.

    count -> refuse if over max_spans_per_request -> sanitize (partial success for invalid
    spans) -> offer to the transport -> an `ExportResult` the gRPC and HTTP receivers map
    onto their status codes.

Telemetry (labelled by receiver id): `receiver_accepted_spans{receiver}`,
`receiver_refused_spans{receiver,reason}` (reasons: invalid, too_many_spans, too_large,
queue_full, closed, transport_unavailable, transport_error), and `dropped_spans{reason}`
for spans rejected as invalid (reasons: invalid_trace_id, invalid_span_id,
invalid_parent_span_id, too_many_attributes). Requests are counted by each receiver in
`receiver_requests{receiver,code}` since the code is protocol specific.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.config import OtlpReceiverConfig
from pipeline.otlp.validate import count_spans, sanitize
from pipeline.telemetry import Telemetry
from pipeline.transport import Offer, RequestTransport


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # success; `response` may carry a partial success
    RETRY_FULL = "queue_full"  # retryable: the transport has no room now
    RETRY_UNAVAILABLE = "unavailable"  # retryable: shutting down or the transport is down
    TOO_LARGE = "too_large"  # not retryable: the request can never be accepted as it is (split it)


@dataclass
class ExportResult:
    outcome: Outcome
    response: ExportTraceServiceResponse
    message: str = ""

    @property
    def partial(self) -> bool:
        return self.response.HasField("partial_success")


_OFFER_OUTCOMES = {
    Offer.FULL: (Outcome.RETRY_FULL, "the transport queue is full; retry later"),
    Offer.CLOSED: (Outcome.RETRY_UNAVAILABLE, "the receiver is shutting down; retry later"),
    Offer.UNAVAILABLE: (Outcome.RETRY_UNAVAILABLE, "the transport is unavailable; retry later"),
}


class ExportHandler:
    """The protocol-independent part of an OTLP receiver."""

    def __init__(
        self,
        receiver_id: str,
        cfg: OtlpReceiverConfig,
        transport: RequestTransport,
        telemetry: Telemetry,
        logger: logging.Logger,
    ) -> None:
        self.receiver_id = receiver_id
        self.cfg = cfg
        self.transport = transport
        self.telemetry = telemetry
        self.log = logger
        self._accepted = telemetry.receiver_accepted_spans.labels(receiver_id)

    def refuse(self, reason: str, spans: int) -> None:
        if spans > 0:
            self.telemetry.receiver_refused_spans.labels(self.receiver_id, reason).inc(spans)

    async def export(self, req: ExportTraceServiceRequest, raw: bytes | None = None) -> ExportResult:
        """`raw`: the protobuf bytes `req` was parsed from, if any; a transport that stores bytes
        (`accepts_raw`, the embedded write-ahead log) takes them as they are when no span was
        removed, instead of serialising the request again."""
        cfg = self.cfg
        total = count_spans(req)
        if total > cfg.max_spans_per_request:
            self.refuse("too_many_spans", total)
            return ExportResult(
                Outcome.TOO_LARGE,
                ExportTraceServiceResponse(),
                f"request has {total} spans, more than max_spans_per_request ({cfg.max_spans_per_request})",
            )
        checked = sanitize(req, cfg.max_attributes_per_span)
        resp = ExportTraceServiceResponse()
        if checked.rejected:
            resp.partial_success.rejected_spans = checked.rejected
            resp.partial_success.error_message = checked.message
            self.refuse("invalid", checked.rejected)
            for reason, n in checked.reasons.items():
                self.telemetry.dropped_spans.labels(reason).inc(n)
            self.log.debug("receiver %s: %s", self.receiver_id, checked.message)
        if checked.accepted == 0:
            return ExportResult(Outcome.ACCEPTED, resp)
        n = checked.accepted
        try:
            if raw is not None and not checked.rejected and getattr(self.transport, "accepts_raw", False):
                offer = await self.transport.offer(req, n, timeout=cfg.enqueue_timeout, raw=raw)  # type: ignore[call-arg]
            else:
                offer = await self.transport.offer(req, n, timeout=cfg.enqueue_timeout)
        except Exception:
            self.log.exception("receiver %s: transport failed to take %d spans", self.receiver_id, n)
            self.refuse("transport_error", n)
            return ExportResult(Outcome.RETRY_UNAVAILABLE, resp, "the transport failed; retry later")
        if offer is Offer.ACCEPTED:
            self._accepted.inc(n)
            return ExportResult(Outcome.ACCEPTED, resp)
        self.refuse(offer.value, n)
        if offer is Offer.TOO_LARGE:
            return ExportResult(
                Outcome.TOO_LARGE, resp, f"request of {n} spans is larger than the whole transport queue; split it"
            )
        outcome, message = _OFFER_OUTCOMES.get(offer, (Outcome.RETRY_UNAVAILABLE, f"transport refused: {offer.value}"))
        return ExportResult(outcome, resp, message)
