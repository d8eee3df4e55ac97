"""The span model every processor and sink works on.

Spans are decoded once from OTLP protobuf into these small slotted objects; processors
mutate them in place and sinks read them. Attribute values are plain Python values
(str, bool, int, float, bytes, list, dict) as the OTLP AnyValue carried them.

Ids are lowercase hex strings (32 chars for trace ids, 16 for span ids, "" for no
parent), the form the OTel Collector's ClickHouse exporter stores.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

AttrValue = Any
Attributes = dict[str, AttrValue]

# OTLP enum values -> the strings the OTel Collector ClickHouse exporter stores.
SPAN_KIND_NAMES = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODE_NAMES = ("Unset", "Ok", "Error")

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2


class Resource:
    """Resource attributes shared by every span of one OTLP ResourceSpans."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, attributes: Attributes | None = None, schema_url: str = "") -> None:
        self.attributes: Attributes = attributes if attributes is not None else {}
        self.schema_url = schema_url

    @property
    def service_name(self) -> str:
        value = self.attributes.get("service.name")
        return value if isinstance(value, str) else "unknown_service"


class Event:
    __slots__ = ("attributes", "name", "time_ns")

    def __init__(self, time_ns: int, name: str, attributes: Attributes | None = None) -> None:
        self.time_ns = time_ns
        self.name = name
        self.attributes: Attributes = attributes if attributes is not None else {}


class Link:
    __slots__ = ("attributes", "span_id", "trace_id", "trace_state")

    def __init__(
        self, trace_id: str, span_id: str, trace_state: str = "", attributes: Attributes | None = None
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_state = trace_state
        self.attributes: Attributes = attributes if attributes is not None else {}


class Span:
    """One span. `attributes` is the span's own dict; `resource` may be shared."""

    __slots__ = (
        "attributes",
        "end_ns",
        "events",
        "flags",
        "kind",
        "links",
        "name",
        "parent_span_id",
        "resource",
        "scope_name",
        "scope_version",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        name: str,
        start_ns: int,
        end_ns: int,
        *,
        parent_span_id: str = "",
        kind: int = 0,
        attributes: Attributes | None = None,
        resource: Resource | None = None,
        status_code: int = STATUS_UNSET,
        status_message: str = "",
        events: list[Event] | None = None,
        links: list[Link] | None = None,
        trace_state: str = "",
        flags: int = 0,
        scope_name: str = "",
        scope_version: str = "",
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.trace_state = trace_state
        self.flags = flags
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes: Attributes = attributes if attributes is not None else {}
        self.resource = resource if resource is not None else Resource()
        self.status_code = status_code
        self.status_message = status_message
        self.events: list[Event] = events if events is not None else []
        self.links: list[Link] = links if links is not None else []
        self.scope_name = scope_name
        self.scope_version = scope_version

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def service_name(self) -> str:
        return self.resource.service_name

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_ERROR

    def __repr__(self) -> str:  # never prints attribute values
        return f"Span({self.name!r}, trace={self.trace_id}, span={self.span_id})"


@dataclass
class SpanBatch:
    """A batch of spans moving through a chain.

    `batch_id` identifies the batch across redeliveries (embedded: a sequence of the
    queue; Kafka: topic/partition/offset range). Sinks derive idempotency keys from it.
    """

    spans: list[Span]
    batch_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[Span]:
        return iter(self.spans)

    def with_spans(self, spans: list[Span]) -> SpanBatch:
        """The same batch identity carrying another list of spans."""
        return SpanBatch(spans=spans, batch_id=self.batch_id, meta=self.meta)

    def clone(self) -> SpanBatch:
        """A copy whose spans can be mutated without touching these (fan-out to pipelines)."""
        resources: dict[int, Resource] = {}
        return SpanBatch(
            spans=[copy_span(s, resources) for s in self.spans], batch_id=self.batch_id, meta=dict(self.meta)
        )


def _copy_attrs(attributes: Attributes) -> Attributes:
    out = dict(attributes)
    for k, v in out.items():
        if isinstance(v, list | dict):
            out[k] = copy.deepcopy(v)
    return out


def copy_span(span: Span, resources: dict[int, Resource] | None = None) -> Span:
    """Copy a span deeply enough that processors may mutate the copy (attributes, events,
    links, resource). Resources shared by several spans stay shared among the copies."""
    resources = resources if resources is not None else {}
    res = resources.get(id(span.resource))
    if res is None:
        res = Resource(_copy_attrs(span.resource.attributes), span.resource.schema_url)
        resources[id(span.resource)] = res
    return Span(
        span.trace_id,
        span.span_id,
        span.name,
        span.start_ns,
        span.end_ns,
        parent_span_id=span.parent_span_id,
        kind=span.kind,
        attributes=_copy_attrs(span.attributes),
        resource=res,
        status_code=span.status_code,
        status_message=span.status_message,
        events=[Event(e.time_ns, e.name, _copy_attrs(e.attributes)) for e in span.events],
        links=[Link(lk.trace_id, lk.span_id, lk.trace_state, _copy_attrs(lk.attributes)) for lk in span.links],
        trace_state=span.trace_state,
        flags=span.flags,
        scope_name=span.scope_name,
        scope_version=span.scope_version,
    )


def attr_float(attributes: Attributes, key: str) -> float | None:
    """The attribute as a float, or None when absent or not numeric."""
    value = attributes.get(key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def attr_int(attributes: Attributes, key: str) -> int | None:
    """The attribute as an int, or None when absent or not numeric."""
    value = attributes.get(key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def attr_str(attributes: Attributes, key: str) -> str | None:
    """The attribute as a non-empty string, or None."""
    value = attributes.get(key)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
