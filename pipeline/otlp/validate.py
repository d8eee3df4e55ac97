"""Span-level validation of OTLP export requests, done by the receivers before enqueueing.

`sanitize_request` removes, in place, spans that no sink could store correctly — a trace
id that is not 16 bytes or is all zero, a span id that is not 8 bytes or is all zero, a
parent span id that is neither empty nor 8 bytes, more attributes than allowed — and
drops scope/resource entries left empty. With `storage_checks` (the default) it also
rejects spans whose times ClickHouse's DateTime64(9) cannot hold and clamps the fixable
ones (a start or end past 2262-04-11 is rejected, an end before the start clamped; see
`_clamp_for_storage`). The rest of the request is kept: a bad span
never poisons its batch, and the client learns about the rejected ones through an OTLP
partial success (rejected_spans + error_message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["SanitizeResult", "count_spans", "sanitize", "sanitize_request"]

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_DELETE_IN_PLACE_MAX = 64

# reason -> how the error message describes it
_REASONS = {
    "invalid_trace_id": "an invalid trace id (must be 16 bytes, not all zero)",
    "invalid_span_id": "an invalid span id (must be 8 bytes, not all zero)",
    "invalid_parent_span_id": "an invalid parent span id (must be empty or 8 bytes)",
    "too_many_attributes": "more than {max} attributes",
    "timestamp_out_of_range": "a start or end time after 2262-04-11T23:47:16Z (storage cannot hold it)",
}
# DateTime64(9) holds 1900-01-01 .. 2262-04-11T23:47:16.854775807Z; OTLP times are unsigned
# nanoseconds since 1970, so only the upper bound can be crossed.
MAX_STORABLE_NS = 2**63 - 1
CLAMPED_ATTRIBUTE = "tracepipe.clamped"


@dataclass
class SanitizeResult:
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> rejected spans
    message: str = ""
    clamped: dict[str, int] = field(default_factory=dict)  # reason -> spans accepted after clamping


def count_spans(req: ExportTraceServiceRequest) -> int:
    """Number of spans in the request."""
    return sum([len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans])


def sanitize(
    req: ExportTraceServiceRequest, max_attributes_per_span: int, *, storage_checks: bool = True
) -> SanitizeResult:
    """Remove invalid spans in place; the counts by reason and a client-facing message."""
    res = SanitizeResult()
    storage = storage_checks
    max_ns = MAX_STORABLE_NS
    clamped = res.clamped
    reasons = res.reasons
    zero_t = _ZERO_TRACE
    zero_s = _ZERO_SPAN
    max_attrs = max_attributes_per_span
    accepted = 0
    resource_spans = req.resource_spans
    empty_rs: list[int] = []
    for ri, rs in enumerate(resource_spans):
        scope_spans = rs.scope_spans
        empty_ss: list[int] = []
        for si, ss in enumerate(scope_spans):
            spans = ss.spans
            bad: list[int] = []
            for i, sp in enumerate(spans):
                t = sp.trace_id
                s = sp.span_id
                if len(t) != 16 or t == zero_t:
                    reason = "invalid_trace_id"
                elif len(s) != 8 or s == zero_s:
                    reason = "invalid_span_id"
                elif len(sp.parent_span_id) not in (0, 8):
                    reason = "invalid_parent_span_id"
                elif len(sp.attributes) > max_attrs:
                    reason = "too_many_attributes"
                elif storage and ((st := sp.start_time_unix_nano) > max_ns or (en := sp.end_time_unix_nano) > max_ns):
                    reason = "timestamp_out_of_range"  # a clock bug, not data: rejected
                else:
                    if storage and en < st:
                        _clamp_for_storage(sp, clamped)
                    continue
                bad.append(i)
                reasons[reason] = reasons.get(reason, 0) + 1
            if bad:
                _remove(spans, bad)
            n = len(spans)
            accepted += n
            if n == 0:
                empty_ss.append(si)
        for si in reversed(empty_ss):
            del scope_spans[si]
        if not scope_spans:
            empty_rs.append(ri)
    for ri in reversed(empty_rs):
        del resource_spans[ri]
    res.accepted = accepted
    if reasons:
        res.rejected = sum(reasons.values())
        parts = [
            f"{n} with " + _REASONS[r].format(max=max_attrs) for r, n in sorted(reasons.items(), key=lambda x: -x[1])
        ]
        res.message = f"{res.rejected} span(s) rejected: " + "; ".join(parts)
    return res


def _clamp_for_storage(sp: Any, clamped: dict[str, int]) -> None:
    """Fix in place what storage would misread, and flag the span (`tracepipe.clamped`): an
    end before the start becomes the start (duration 0; an unset end is common in hand-rolled
    exporters). Event times are not read here (a field read per event on the hot path): the
    clickhouse sink stores an event time past 2262 as the last storable instant."""
    sp.end_time_unix_nano = sp.start_time_unix_nano
    clamped["end_before_start"] = clamped.get("end_before_start", 0) + 1
    kv = sp.attributes.add()
    kv.key = CLAMPED_ATTRIBUTE
    kv.value.string_value = "end_before_start"


def _remove(spans: Any, bad: list[int]) -> None:
    """Delete the spans at the (ascending) indices `bad` from a repeated field."""
    if len(bad) <= _DELETE_IN_PLACE_MAX:
        for i in reversed(bad):
            del spans[i]
        return
    # each `del` shifts the tail: with many bad spans, rebuild instead of going quadratic
    drop = set(bad)
    kept = [sp for i, sp in enumerate(spans) if i not in drop]
    del spans[:]
    spans.extend(kept)


def sanitize_request(req: ExportTraceServiceRequest, max_attributes_per_span: int) -> tuple[int, int, str]:
    """Remove invalid spans in place; (accepted_spans, rejected_spans, error_message)."""
    r = sanitize(req, max_attributes_per_span)
    return r.accepted, r.rejected, r.message
