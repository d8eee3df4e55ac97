"""OTLP protobuf -> the span model (pipeline.spans).

`decode_request` is the hot path of every runtime: it runs once per span, so it is
written flat — local-variable lookups, one `WhichOneof` per attribute value, and no
helper call per span except for the rarer events and links. One `Resource` is built
per ResourceSpans and shared by all of its spans.

Attribute values become plain Python values: string, bool, int, double, bytes; an
array becomes a list and a kvlist a dict (recursively); an empty AnyValue becomes None.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.spans import Attributes, Event, Link, Resource, Span

__all__ = ["any_value", "attributes", "decode_request"]


def any_value(value: Any) -> Any:
    """One OTLP AnyValue as a Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(kvs: Iterable[Any]) -> Attributes:
    """Repeated KeyValue -> dict (a later duplicate key wins)."""
    out: Attributes = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = v.string_value
        elif which is None:
            out[kv.key] = None
        elif which == "array_value":
            out[kv.key] = [any_value(x) for x in v.array_value.values]
        elif which == "kvlist_value":
            out[kv.key] = attributes(v.kvlist_value.values)
        else:
            out[kv.key] = getattr(v, which)
    return out


def _events(events: Iterable[Any]) -> list[Event]:
    return [Event(e.time_unix_nano, e.name, attributes(e.attributes) if e.attributes else {}) for e in events]


def _links(links: Iterable[Any]) -> list[Link]:
    return [
        Link(lk.trace_id.hex(), lk.span_id.hex(), lk.trace_state, attributes(lk.attributes) if lk.attributes else {})
        for lk in links
    ]


def decode_request(req: ExportTraceServiceRequest) -> list[Span]:
    """Every span of an export request, in request order."""
    out: list[Span] = []
    append = out.append
    new = object.__new__
    any_value_ = any_value
    attributes_ = attributes
    for rs in req.resource_spans:
        resource = Resource(attributes_(rs.resource.attributes), rs.schema_url)
        for ss in rs.scope_spans:
            scope = ss.scope
            scope_name = scope.name
            scope_version = scope.version
            for sp in ss.spans:
                attrs: Attributes = {}
                for kv in sp.attributes:
                    v = kv.value
                    which = v.WhichOneof("value")
                    if which == "string_value":
                        attrs[kv.key] = v.string_value
                    elif which is None:
                        attrs[kv.key] = None
                    elif which == "array_value":
                        attrs[kv.key] = [any_value_(x) for x in v.array_value.values]
                    elif which == "kvlist_value":
                        attrs[kv.key] = attributes_(v.kvlist_value.values)
                    else:
                        attrs[kv.key] = getattr(v, which)
                st = sp.status
                evs = sp.events
                lks = sp.links
                s = new(Span)
                s.trace_id = sp.trace_id.hex()
                s.span_id = sp.span_id.hex()
                s.parent_span_id = sp.parent_span_id.hex()
                s.trace_state = sp.trace_state
                s.flags = sp.flags
                s.name = sp.name
                s.kind = sp.kind
                s.start_ns = sp.start_time_unix_nano
                s.end_ns = sp.end_time_unix_nano
                s.attributes = attrs
                s.resource = resource
                s.status_code = st.code
                s.status_message = st.message
                s.events = _events(evs) if evs else []
                s.links = _links(lks) if lks else []
                s.scope_name = scope_name
                s.scope_version = scope_version
                append(s)
    return out
