"""Protobuf wire-format helpers for OTLP export requests, for work that needs no decoding.

An ExportTraceServiceRequest is a sequence of `resource_spans` fields (field 1,
length-delimited). Repeated fields concatenate and a repeated occurrence of an embedded
message field merges into the earlier one, so requests can be cut apart, joined and extended
as bytes: the Kafka transport splits a request by trace from the bytes received
(pipeline/transport/kafka_producer.py), tenant stamping appends the `tenant.id` resource
attribute to each ResourceSpans (pipeline/auth/tenant.py).
"""

from __future__ import annotations

__all__ = ["F1", "F2", "F3", "field", "resource_spans_fields", "varint"]

# Length-delimited field headers: field 1, 2, 3 (ExportTraceServiceRequest.resource_spans;
# ResourceSpans.resource / scope_spans / schema_url; ScopeSpans.scope / spans / schema_url;
# Resource.attributes is field 1 too).
F1, F2, F3 = b"\x0a", b"\x12", b"\x1a"


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf varint."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited protobuf field: tag, varint length, payload."""
    return tag + varint(len(payload)) + payload


def resource_spans_fields(raw: bytes) -> list[memoryview] | None:
    """The top-level fields of a serialised ExportTraceServiceRequest, one per ResourceSpans,
    each with its field header (so joining any of them is again a request), as views of `raw`;
    None when `raw` holds anything else (an unknown field, a malformed length)."""
    view = memoryview(raw)
    out: list[memoryview] = []
    pos, end = 0, len(raw)
    while pos < end:
        if raw[pos] != 0x0A:  # field 1, length-delimited: resource_spans
            return None
        start = pos
        pos += 1
        size = shift = 0
        while True:
            if pos >= end or shift > 35:
                return None
            b = raw[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        pos += size
        if pos > end:
            return None
        out.append(view[start:pos])
    return out
