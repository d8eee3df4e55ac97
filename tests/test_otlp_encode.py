"""Span -> OTLP protobuf (pipeline/otlp/encode.py): the exact inverse of the decoder."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.otlp.decode import decode_request
from pipeline.otlp.encode import encode_spans
from pipeline.spans import Span
from tests.otlp_support import kv, pb_request, pb_span


def _rich_request() -> ExportTraceServiceRequest:
    a = pb_span(1, parent=(7).to_bytes(8, "big"))
    a.trace_state = "k=v"
    a.flags = 0x101
    a.status.code = 2  # STATUS_CODE_ERROR
    a.status.message = "boom"
    arr = AnyValue()
    arr.array_value.values.extend([AnyValue(string_value="x"), AnyValue(int_value=-3), AnyValue(double_value=1.5)])
    kvl = AnyValue()
    kvl.kvlist_value.values.extend([kv("inner", True), KeyValue(key="empty", value=AnyValue())])
    a.attributes.extend([kv("s", "text"), kv("b", False), kv("i", 2**62), kv("d", float("inf")),
                         KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\xff")),
                         KeyValue(key="arr", value=arr), KeyValue(key="map", value=kvl),
                         KeyValue(key="none", value=AnyValue())])
    ev = a.events.add()
    ev.time_unix_nano, ev.name = 1_700_000_000_500_000_000, "retry"
    ev.attributes.append(kv("attempt", 2))
    lk = a.links.add()
    lk.trace_id, lk.span_id, lk.trace_state = (9).to_bytes(16, "big"), (9).to_bytes(8, "big"), "x=y"
    lk.attributes.append(kv("why", "follows"))
    req = pb_request([a, pb_span(2)], service="enc-app")
    req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    req.resource_spans[0].scope_spans[0].scope.version = "1.2"
    other = pb_request([pb_span(3)], service="other-app").resource_spans[0]
    req.resource_spans.append(other)
    return req


def test_encoding_decoded_spans_gives_back_the_same_request():
    req = _rich_request()
    assert encode_spans(decode_request(req)) == req


def test_round_trip_keeps_every_field_of_every_span():
    spans = decode_request(_rich_request())
    again = decode_request(ExportTraceServiceRequest.FromString(encode_spans(spans).SerializeToString()))

    def fields(s: Span) -> tuple:
        return (s.trace_id, s.span_id, s.parent_span_id, s.trace_state, s.flags, s.name, s.kind, s.start_ns,
                s.end_ns, s.attributes, s.resource.attributes, s.resource.schema_url, s.status_code,
                s.status_message, [(e.time_ns, e.name, e.attributes) for e in s.events],
                [(lk.trace_id, lk.span_id, lk.trace_state, lk.attributes) for lk in s.links],
                s.scope_name, s.scope_version)

    assert [fields(s) for s in again] == [fields(s) for s in spans]
    assert len(again) == 3 and again[0].attributes["arr"] == ["x", -3, 1.5]


def test_values_a_processor_added_are_encoded_as_otlp_can_carry_them():
    s = Span("0" * 31 + "1", "0" * 15 + "1", "n", 1, 2,
             attributes={"big": 2**70, "tuple": (1, 2), "obj": object.__name__, "nested": {"a": [1, {"b": None}]}})
    (back,) = decode_request(encode_spans([s]))
    assert back.attributes == {"big": str(2**70), "tuple": [1, 2], "obj": "object", "nested": {"a": [1, {"b": None}]}}
