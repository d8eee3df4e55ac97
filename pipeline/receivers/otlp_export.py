"""What both OTLP receivers do with a decoded export request, independent of the protocol.

    sanitize (partial success for invalid spans; it counts the spans too) -> refuse if over
    max_spans_per_request -> offer to the transport -> an `ExportResult` the gRPC and HTTP
    receivers map onto their status codes.

Telemetry (labelled by receiver id): `receiver_accepted_spans{receiver}`,
`receiver_refused_spans{receiver,reason}` (reasons: invalid, too_many_spans, too_large,
queue_full, closed, transport_unavailable, transport_error), and `dropped_spans{reason}`
for spans rejected as invalid (reasons: invalid_trace_id, invalid_span_id,
invalid_parent_span_id, too_many_attributes, timestamp_out_of_range),
`receiver_clamped_spans{receiver,reason}` for spans accepted after clamping, and
`receiver_truncated_values{receiver,field}` for values cut to the receiver's limits
(pipeline/otlp/limits.py). Requests are counted by each receiver in
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

from pipeline.auth.principal import ANONYMOUS, Principal
from pipeline.auth.tenant import stamp_tenant, stamp_tenant_wire
from pipeline.config import OtlpReceiverConfig
from pipeline.logs import safe_value
from pipeline.memory import note_request
from pipeline.otlp.limits import enforce_value_limits
from pipeline.otlp.validate import sanitize
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

    def _truncate(self, req: ExportTraceServiceRequest, size: int) -> bool:
        """Cut values to the receiver's limits; whether anything was cut."""
        cfg = self.cfg
        cut = enforce_value_limits(req, cfg.max_attribute_value_length, cfg.max_span_name_length, size)
        if cut.any:
            t = self.telemetry.receiver_truncated_values
            if cut.attribute_values:
                t.labels(self.receiver_id, "attribute_value").inc(cut.attribute_values)
            if cut.names:
                t.labels(self.receiver_id, "name").inc(cut.names)
            self.log.debug(
                "receiver %s: truncated %d value(s) and %d name(s) in %d span(s): %s",
                self.receiver_id, cut.attribute_values, cut.names, cut.spans,
                ", ".join(safe_value(k, 64) for k in cut.flagged_keys),
            )
        return bool(cut.any)

    def refuse(self, reason: str, spans: int) -> None:
        if spans > 0:
            self.telemetry.receiver_refused_spans.labels(self.receiver_id, reason).inc(spans)

    async def export(self, req: ExportTraceServiceRequest, principal: Principal = ANONYMOUS,
                     wire: bytes | None = None, size: int | None = None) -> ExportResult:
        """`principal` is the authenticated caller; with auth on (not ANONYMOUS) its tenant is
        stamped on the request (pipeline/auth/tenant.py) before the transport sees it.
        `wire`: the protobuf bytes `req` was parsed from, if any: stamping works on them when
        nothing else changed the request, and a transport that stores bytes (`accepts_raw`:
        Kafka, the embedded write-ahead log) takes them as they are when nothing in the request
        was changed (or only stamped as bytes), instead of serialising it again.
        `size`: the request's size in bytes when the receiver knows it (else computed)."""
        cfg = self.cfg
        if size is not None:
            note_request(size)  # a large request schedules a malloc_trim (pipeline/memory.py)
        # one walk over the spans both counts and checks them (refused requests are rare)
        checked = sanitize(req, cfg.max_attributes_per_span, storage_checks=cfg.storage_checks)
        total = checked.accepted + checked.rejected
        if total > cfg.max_spans_per_request:
            self.refuse("too_many_spans", total)
            return ExportResult(
                Outcome.TOO_LARGE,
                ExportTraceServiceResponse(),
                f"request has {total} spans, more than max_spans_per_request ({cfg.max_spans_per_request})",
            )
        for reason, n in checked.clamped.items():
            self.telemetry.receiver_clamped_spans.labels(self.receiver_id, reason).inc(n)
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
        changed = self._truncate(req, req.ByteSize() if size is None else size)
        changed = changed or bool(checked.rejected or checked.clamped)
        n = checked.accepted
        if principal is not ANONYMOUS:
            stamped = None if changed or wire is None else stamp_tenant_wire(wire, principal.tenant)
            stamp_tenant(req, principal.tenant, wire)  # without tenant.id in `wire`: one append per resource
            if stamped is not None:  # the same stamp as bytes: they still go on unserialised
                wire = stamped
            else:
                changed = True
        try:
            if wire is not None and not changed and getattr(self.transport, "accepts_raw", False):
                offer = await self.transport.offer(req, n, timeout=cfg.enqueue_timeout, raw=wire)  # type: ignore[call-arg]
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
