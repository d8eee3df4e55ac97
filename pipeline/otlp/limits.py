"""What an accepted request may hold: the nesting depth the protobuf decoder reads back, and
the size of single values.

Depth. Every runtime hands the request on as protobuf (the Kafka payload, the embedded
write-ahead log) and decodes it again with upb (`ExportTraceServiceRequest.FromString`,
then pipeline/otlp/decode.py). upb refuses messages nested deeper than
`upb_DecodeOptions_MaxDepth` (100 message levels), which for span, event, link and scope
attributes is 32 levels of `kvlistValue` (AnyValue -> KeyValueList -> KeyValue per level)
or 48 of `arrayValue`, for resource attributes one more. That limit is the one limit for
both encodings: a protobuf request deeper than it fails to decode at the door, and a JSON
request is accepted only if its protobuf form decodes again (`ensure_decodable`), so a
request accepted is always decodable by the worker. Both answer 400 / INVALID_ARGUMENT
with `DEPTH_MESSAGE`.

Size. `enforce_value_limits` truncates, in place, string and bytes attribute values
(span, event, link, scope and resource attributes, nested values too, and the status
message) longer than `max_attribute_value_length`, and span and event names longer than
`max_span_name_length`; a span that lost something carries `tracepipe.truncated`, the
list of what was cut (`name`, or the attribute key). Lengths count characters for strings
(as the OTel SDKs' attribute_value_length_limit does) and bytes for bytes values. A value
of N characters needs at least N bytes on the wire, so requests smaller than the limits are
not walked at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.otlp.errors import OtlpDecodeError

__all__ = [
    "DEPTH_MESSAGE",
    "MAX_ARRAY_DEPTH",
    "MAX_KVLIST_DEPTH",
    "TRUNCATED_ATTRIBUTE",
    "TruncateResult",
    "decode_protobuf",
    "enforce_value_limits",
    "ensure_decodable",
]

# Measured with upb (protobuf 7.x python, FromString): the deepest AnyValue nesting that
# decodes in span/event/link/scope attributes (resource attributes take one more level).
MAX_KVLIST_DEPTH = 32
MAX_ARRAY_DEPTH = 48
DEPTH_MESSAGE = (
    "attribute values nested too deeply: the protobuf decoder reads at most 100 message levels, "
    f"i.e. {MAX_KVLIST_DEPTH} levels of kvlistValue or {MAX_ARRAY_DEPTH} of arrayValue in span attributes"
)
TRUNCATED_ATTRIBUTE = "tracepipe.truncated"
_MAX_FLAGGED_KEYS = 32
_MAX_FLAGGED_KEY_CHARS = 128


def _decode_error(e: Exception) -> OtlpDecodeError:
    text = str(e)
    if "MaxDepth" in text:
        return OtlpDecodeError(DEPTH_MESSAGE)
    return OtlpDecodeError(f"malformed OTLP protobuf: {text[:300]}")


def decode_protobuf(data: bytes) -> ExportTraceServiceRequest:
    """An OTLP protobuf body -> ExportTraceServiceRequest; OtlpDecodeError (never another
    exception) for anything upb refuses, with DEPTH_MESSAGE when it is nested too deeply."""
    try:
        return ExportTraceServiceRequest.FromString(data)
    except (DecodeError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _decode_error(e) from None


def ensure_decodable(req: ExportTraceServiceRequest) -> None:
    """Raise OtlpDecodeError unless the protobuf form of `req` (built from JSON) decodes again
    downstream. Serializing and parsing with upb costs under 1 % of the JSON parse."""
    try:
        ExportTraceServiceRequest.FromString(req.SerializeToString())
    except (DecodeError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _decode_error(e) from None


@dataclass
class TruncateResult:
    attribute_values: int = 0  # values cut to max_attribute_value_length
    names: int = 0  # span and event names cut to max_span_name_length
    spans: int = 0  # spans flagged with tracepipe.truncated
    flagged_keys: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.attribute_values or self.names)


class _Walk:
    def __init__(self, max_value: int, result: TruncateResult) -> None:
        self.max_value = max_value
        self.result = result

    def value(self, v: Any) -> bool:
        """Truncate one AnyValue in place (recursively); True when something was cut."""
        which = v.WhichOneof("value")
        limit = self.max_value
        if which == "string_value":
            s = v.string_value
            if len(s) > limit:
                v.string_value = s[:limit]
                self.result.attribute_values += 1
                return True
            return False
        if which == "bytes_value":
            b = v.bytes_value
            if len(b) > limit:
                v.bytes_value = b[:limit]
                self.result.attribute_values += 1
                return True
            return False
        if which == "array_value":
            cut = False
            for x in v.array_value.values:
                cut = self.value(x) or cut
            return cut
        if which == "kvlist_value":
            return bool(self.kvs(v.kvlist_value.values))
        return False

    def kvs(self, kvs: Any) -> list[str]:
        """Truncate a repeated KeyValue; the keys whose values were cut."""
        cut: list[str] = []
        for kv in kvs:
            if self.value(kv.value):
                cut.append(kv.key)
        return cut


def enforce_value_limits(
    req: ExportTraceServiceRequest, max_attribute_value_length: int, max_span_name_length: int, size: int
) -> TruncateResult:
    """Truncate over-long values in place (see the module doc); `size` is the request's size
    in bytes (a lower bound is enough): nothing longer than it can be in the request."""
    result = TruncateResult()
    check_values = size > max_attribute_value_length
    check_names = size > max_span_name_length
    if not (check_values or check_names):
        return result
    walk = _Walk(max_attribute_value_length, result)
    max_name = max_span_name_length
    for rs in req.resource_spans:
        if check_values:
            walk.kvs(rs.resource.attributes)
        for ss in rs.scope_spans:
            if check_values:
                walk.kvs(ss.scope.attributes)
            for sp in ss.spans:
                flagged: list[str] = []
                if check_names and len(sp.name) > max_name:
                    sp.name = sp.name[:max_name]
                    result.names += 1
                    flagged.append("name")
                for ev in sp.events:
                    if check_names and len(ev.name) > max_name:
                        ev.name = ev.name[:max_name]
                        result.names += 1
                        flagged.append("events.name")
                    if check_values:
                        flagged.extend(walk.kvs(ev.attributes))
                if check_values:
                    flagged.extend(walk.kvs(sp.attributes))
                    for lk in sp.links:
                        flagged.extend(walk.kvs(lk.attributes))
                    if len(sp.status.message) > max_attribute_value_length:
                        sp.status.message = sp.status.message[:max_attribute_value_length]
                        result.attribute_values += 1
                        flagged.append("status.message")
                if flagged:
                    result.spans += 1
                    _flag(sp, flagged)
                    if len(result.flagged_keys) < _MAX_FLAGGED_KEYS:
                        result.flagged_keys.extend(flagged[: _MAX_FLAGGED_KEYS - len(result.flagged_keys)])
    return result


def _flag(sp: Any, flagged: list[str]) -> None:
    keys = list(dict.fromkeys(k[:_MAX_FLAGGED_KEY_CHARS] for k in flagged))[:_MAX_FLAGGED_KEYS]
    kv = sp.attributes.add(key=TRUNCATED_ATTRIBUTE)
    for k in keys:
        kv.value.array_value.values.add().string_value = k
