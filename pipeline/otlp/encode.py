"""The span model (pipeline.spans) -> OTLP protobuf: the inverse of `pipeline.otlp.decode`.

Used where spans leave tracepipe as OTLP again after processing: the dead-letter store and
topic keep refused spans as an `ExportTraceServiceRequest`, so they can be read by any OTLP
tool and replayed through the same decoder. Spans that share a `Resource` object and a scope
share one ResourceSpans / ScopeSpans, as they arrived.

Attribute values map back as decode produced them: str, bool, int, float, bytes, list
(array_value), dict (kvlist_value), None (an empty AnyValue). Anything else (a value a
processor put there) is written as its string form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from pipeline.spans import Attributes, Span

__all__ = ["encode_spans", "set_any_value"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def set_any_value(target: Any, value: Any) -> None:
    """Fill the OTLP AnyValue `target` from a Python value."""
    t = type(value)
    if t is str:
        target.string_value = value
    elif t is bool:
        target.bool_value = value
    elif t is int:
        if _I64_MIN <= value <= _I64_MAX:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif t is float:
        target.double_value = value
    elif value is None:
        target.SetInParent()  # an empty AnyValue, as the decoder read it
    elif isinstance(value, bytes | bytearray):
        target.bytes_value = bytes(value)
    elif isinstance(value, list | tuple):
        values = target.array_value.values
        target.array_value.SetInParent()
        for v in value:
            set_any_value(values.add(), v)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        _set_attributes(target.kvlist_value.values, value)
    else:
        target.string_value = str(value)


def _set_attributes(kvs: Any, attributes: Attributes) -> None:
    for key, value in attributes.items():
        kv = kvs.add()
        kv.key = key
        set_any_value(kv.value, value)


def _id(hex_id: str) -> bytes:
    try:
        return bytes.fromhex(hex_id)
    except ValueError:
        return hex_id.encode()


def encode_spans(spans: Iterable[Span]) -> ExportTraceServiceRequest:
    """The spans as one export request, grouped by resource (object identity) and scope."""
    req = ExportTraceServiceRequest()
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], ScopeSpans]]] = {}
    for s in spans:
        entry = by_resource.get(id(s.resource))
        if entry is None:
            rs = req.resource_spans.add()
            rs.schema_url = s.resource.schema_url
            _set_attributes(rs.resource.attributes, s.resource.attributes)
            entry = by_resource[id(s.resource)] = (rs, {})
        rs, scopes = entry
        scope_key = (s.scope_name, s.scope_version)
        ss = scopes.get(scope_key)
        if ss is None:
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = scope_key
            scopes[scope_key] = ss
        sp = ss.spans.add()
        sp.trace_id = _id(s.trace_id)
        sp.span_id = _id(s.span_id)
        if s.parent_span_id:
            sp.parent_span_id = _id(s.parent_span_id)
        sp.trace_state = s.trace_state
        sp.flags = s.flags
        sp.name = s.name
        sp.kind = s.kind  # type: ignore[assignment]
        sp.start_time_unix_nano = s.start_ns
        sp.end_time_unix_nano = s.end_ns
        _set_attributes(sp.attributes, s.attributes)
        if s.status_code or s.status_message:
            sp.status.code = s.status_code  # type: ignore[assignment]
            sp.status.message = s.status_message
        for e in s.events:
            ev = sp.events.add()
            ev.time_unix_nano = e.time_ns
            ev.name = e.name
            _set_attributes(ev.attributes, e.attributes)
        for lk in s.links:
            pl = sp.links.add()
            pl.trace_id = _id(lk.trace_id)
            pl.span_id = _id(lk.span_id)
            pl.trace_state = lk.trace_state
            _set_attributes(pl.attributes, lk.attributes)
    return req
