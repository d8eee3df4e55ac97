"""The OTLP codec: protobuf -> Span decode, the OTLP/JSON mapping, span sanitizing."""

from __future__ import annotations

import base64
import copy
import json
import math

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from pipeline.otlp.decode import decode_request
from pipeline.otlp.errors import OtlpDecodeError
from pipeline.otlp.json_mapping import _convert_ids, _fast_request, parse_json_request, response_to_json
from pipeline.otlp.validate import count_spans, sanitize, sanitize_request
from pipeline.spans import Span
from tests.otlp_support import assert_same_spans, good_request, kv, pb_request, pb_span, sdk_spans


def _sdk_request() -> tuple[ExportTraceServiceRequest, list]:
    spans = sdk_spans()
    return encode_spans(spans), spans


def test_sdk_spans_survive_encode_and_decode_exactly():
    req, want = _sdk_request()
    got = decode_request(ExportTraceServiceRequest.FromString(req.SerializeToString()))
    assert_same_spans(got, want)
    llm = next(s for s in got if s.name == "chat gpt-4o")
    assert llm.attributes["gen_ai.response.finish_reasons"] == ["stop", "length"]
    assert llm.links[0].span_id == "b7ad6b7169203331"
    assert llm.status_code == 2 and llm.status_message == "rate limited once"


def test_every_span_slot_is_set_by_decode():
    req, _ = _sdk_request()
    for span in decode_request(req):
        for slot in Span.__slots__:
            getattr(span, slot)  # AttributeError if decode forgot a field of the model


def test_spans_of_one_resource_share_one_resource_object():
    req = pb_request([pb_span(0), pb_span(1)], service="a")
    req.resource_spans.extend(pb_request([pb_span(2)], service="b").resource_spans)
    spans = decode_request(req)
    assert spans[0].resource is spans[1].resource
    assert spans[2].resource is not spans[0].resource
    assert [s.service_name for s in spans] == ["a", "a", "b"]


def test_any_values_become_python_values():
    span = pb_span(0, attrs=0, parent=bytes.fromhex("00f067aa0ba902b7"))
    span.attributes.extend(
        [
            KeyValue(key="s", value=AnyValue(string_value="x")),
            KeyValue(key="b", value=AnyValue(bool_value=True)),
            KeyValue(key="i", value=AnyValue(int_value=-(2**63))),
            KeyValue(key="d", value=AnyValue(double_value=0.5)),
            KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
            KeyValue(key="empty", value=AnyValue()),
            KeyValue(
                key="arr",
                value=AnyValue(
                    array_value=ArrayValue(
                        values=[AnyValue(int_value=1), AnyValue(array_value=ArrayValue(values=[AnyValue()]))]
                    )
                ),
            ),
            KeyValue(
                key="kv",
                value=AnyValue(
                    kvlist_value=KeyValueList(
                        values=[kv("k", "v"), KeyValue(key="n", value=AnyValue(kvlist_value=KeyValueList()))]
                    )
                ),
            ),
        ]
    )
    span.trace_state = "a=1"
    link = span.links.add(trace_id=b"\x02" * 16, span_id=b"\x03" * 8, trace_state="vendor=v1")
    link.attributes.append(kv("link.reason", "retry"))
    event = span.events.add(time_unix_nano=1_700_000_000_500_000_000, name="exception")
    event.attributes.append(kv("exception.type", "TimeoutError"))
    span.flags = 0x301
    (got,) = decode_request(pb_request([span]))
    assert got.attributes == {
        "s": "x", "b": True, "i": -(2**63), "d": 0.5, "raw": b"\x00\xff", "empty": None,
        "arr": [1, [None]], "kv": {"k": "v", "n": {}},
    }  # fmt: skip
    assert got.parent_span_id == "00f067aa0ba902b7"
    assert got.trace_id == "00000000000000000000000000000001" and got.span_id == "0000000000000001"
    assert (got.trace_state, got.flags, got.kind) == ("a=1", 0x301, 3)
    (lk,) = got.links
    assert (lk.trace_id, lk.span_id, lk.trace_state, lk.attributes) == (
        "02" * 16,
        "03" * 8,
        "vendor=v1",
        {"link.reason": "retry"},
    )
    (ev,) = got.events
    assert (ev.time_ns, ev.name, ev.attributes) == (
        1_700_000_000_500_000_000,
        "exception",
        {"exception.type": "TimeoutError"},
    )


# --- OTLP/JSON ---------------------------------------------------------------------------


def _as_otlp_json(req: ExportTraceServiceRequest) -> dict:
    """The OTLP/JSON form of a request: proto3 JSON with hex instead of base64 ids."""
    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for obj in [sp, *sp.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return doc


def test_json_round_trip_equals_protobuf_decode():
    req, want = _sdk_request()
    doc = _as_otlp_json(req)
    assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == format(want[0].context.trace_id, "032x")
    parsed = parse_json_request(json.dumps(doc).encode())
    assert parsed == req
    assert_same_spans(decode_request(parsed), want)


def test_json_accepts_snake_case_enum_names_string_or_number_int64_and_ignores_unknown_fields():
    body = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},
                "scope_spans": [
                    {
                        "scope": {"name": "s", "version": "1"},
                        "spans": [
                            {
                                "trace_id": "5B8EFFF798038103D269B633813FC60C",
                                "span_id": "eee19b7ec3c1b174",
                                "parent_span_id": "",
                                "name": "chat",
                                "kind": "SPAN_KIND_CLIENT",
                                "start_time_unix_nano": 1700000000000000000,
                                "endTimeUnixNano": "1700000001200000000",
                                "attributes": [
                                    {"key": "tokens", "value": {"intValue": "1200"}},
                                    {"key": "n", "value": {"int_value": 7}},
                                    {"key": "raw", "value": {"bytesValue": "AP8="}},
                                ],
                                "status": {"code": 2, "message": "bad"},
                                "futureField": {"x": 1},
                                "links": [
                                    {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
                                ],
                            }
                        ],
                    }
                ],
                "unknownTopLevel": [],
            }
        ]
    }
    (span,) = decode_request(parse_json_request(json.dumps(body).encode()))
    assert span.trace_id == "5b8efff798038103d269b633813fc60c" and span.span_id == "eee19b7ec3c1b174"
    assert span.parent_span_id == ""
    assert span.kind == 3 and span.status_code == 2 and span.status_message == "bad"
    assert span.end_ns - span.start_ns == 1_200_000_000
    assert span.attributes == {"tokens": 1200, "n": 7, "raw": b"\x00\xff"}
    assert (span.links[0].trace_id, span.links[0].span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert (span.scope_name, span.scope_version, span.service_name) == ("s", "1", "j")


def _one_span_json(**span: object) -> bytes:
    base = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "n"}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**base, **span}]}]}]}).encode()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"resourceSpans": [', "malformed JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff\xfe"}]}]}]}', "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"resourceSpans": 5}', "resourceSpans: expected an array"),
        (_one_span_json(traceId="zz" * 16), "spans[0].traceId: not a hex string"),
        (_one_span_json(spanId="abcd"), "spans[0].spanId: expected 16 hex characters, got 4"),
        (_one_span_json(parentSpanId="eee19b7ec3c1b174ee"), "spans[0].parentSpanId: expected 16 hex characters"),
        (_one_span_json(links=[{"traceId": "ab", "spanId": "eee19b7ec3c1b174"}]), "links[0].traceId"),
        (_one_span_json(spanId=12345), "spanId: expected a hex string"),
        (_one_span_json(name="\ud800"), "name: invalid unicode"),
        (_one_span_json(startTimeUnixNano="soon"), "startTimeUnixNano: invalid value"),
    ],
)
def test_bad_json_raises_a_clear_decode_error(body: bytes, fragment: str):
    with pytest.raises(OtlpDecodeError) as err:
        parse_json_request(body)
    assert fragment in err.value.message


def test_json_decode_errors_never_quote_attribute_values():
    body = _one_span_json(attributes=[{"key": "secret", "value": {"intValue": "sk-live-123"}}])
    with pytest.raises(OtlpDecodeError) as err:
        parse_json_request(body)
    assert "sk-live-123" not in err.value.message
    assert "intValue" in err.value.message


def test_response_to_json_is_otlp_json():
    resp = ExportTraceServiceResponse()
    assert json.loads(response_to_json(resp)) == {}
    resp.partial_success.rejected_spans = 2
    resp.partial_success.error_message = "2 span(s) rejected"
    assert json.loads(response_to_json(resp)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "2 span(s) rejected"}
    }


# --- sanitize ----------------------------------------------------------------------------


def test_sanitize_removes_only_invalid_spans_in_place_and_explains():
    good = [pb_span(i) for i in range(3)]
    bad = [
        pb_span(10, trace_id=bytes(16)),
        pb_span(11, trace_id=b"\x01" * 15),
        pb_span(12, span_id=bytes(8)),
        pb_span(13, span_id=b"\x01" * 9),
        pb_span(14, parent=b"\x01" * 4),
        pb_span(15, attrs=6),
    ]
    req = pb_request([good[0], bad[0], bad[1], good[1], *bad[2:], good[2]])
    assert count_spans(req) == 9
    accepted, rejected, message = sanitize_request(req, max_attributes_per_span=5)
    assert (accepted, rejected) == (3, 6)
    assert count_spans(req) == 3
    assert [s.name for s in decode_request(req)] == ["span-0", "span-1", "span-2"]
    for fragment in (
        "6 span(s) rejected",
        "2 with an invalid trace id",
        "2 with an invalid span id",
        "1 with an invalid parent span id",
        "1 with more than 5 attributes",
    ):
        assert fragment in message


def test_sanitize_drops_scope_and_resource_entries_left_empty():
    req = pb_request([pb_span(0, trace_id=bytes(16))], service="all-bad")
    req.resource_spans.extend(good_request(2).resource_spans)
    mixed = req.resource_spans[1]
    mixed.scope_spans.add().spans.append(pb_span(5, span_id=b""))
    result = sanitize(req, 100)
    assert (result.accepted, result.rejected) == (2, 2)
    assert result.reasons == {"invalid_trace_id": 1, "invalid_span_id": 1}
    assert len(req.resource_spans) == 1 and len(req.resource_spans[0].scope_spans) == 1
    assert decode_request(req)[0].service_name == "raw-app"


def test_sanitize_of_a_valid_request_changes_nothing():
    req = good_request(4)
    before = req.SerializeToString()
    assert sanitize_request(req, 2) == (4, 0, "")
    assert req.SerializeToString() == before
    assert count_spans(ExportTraceServiceRequest()) == 0


def _reference_parse(doc: dict) -> ExportTraceServiceRequest:
    """What json_format.ParseDict makes of an OTLP/JSON document (hex ids -> base64 first)."""
    doc = copy.deepcopy(doc)
    _convert_ids(doc)
    return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)


RICH_SPAN = {
    "traceId": "5b8efff798038103d269b633813fc60c",
    "span_id": "eee19b7ec3c1b174",
    "traceState": "a=1",
    "flags": 769,
    "name": "rich",
    "kind": "SPAN_KIND_PRODUCER",
    "startTimeUnixNano": "1700000000000000000",
    "end_time_unix_nano": 1700000000000000001,
    "droppedAttributesCount": 2,
    "dropped_events_count": "1",
    "attributes": [
        {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": 1}, {"boolValue": True}, {}]}}},
        {"key": "empty_arr", "value": {"arrayValue": {}}},
        {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"doubleValue": 2}}]}}},
        {"key": "raw", "value": {"bytes_value": "AP8="}},
        {"key": "url_raw", "value": {"bytesValue": "_-8"}},
        {"key": "no_value"},
        {"key": "null_member", "value": {"stringValue": None, "intValue": "3"}},
    ],
    "events": [{"timeUnixNano": "5", "name": "e", "attributes": [{"key": "k", "value": {"stringValue": "v"}}]}, {}],
    "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "flags": 256}],
    "status": {},
}


@pytest.mark.parametrize("case", ["sdk", "rich", "workload"])
def test_fast_json_path_builds_exactly_what_json_format_builds(case):
    from bench.workload import make_request

    if case == "sdk":
        doc = _as_otlp_json(_sdk_request()[0])
    elif case == "workload":
        doc = _as_otlp_json(make_request(5, seed=3))
    else:
        doc = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "s"}, "spans": [RICH_SPAN]}]}]}
    fast = _fast_request(copy.deepcopy(doc))  # raises if this path gave up on the document
    assert fast == _reference_parse(doc)
    assert fast.SerializeToString(deterministic=True) == _reference_parse(doc).SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"doubleValue": "NaN"}, math.nan),
        ({"doubleValue": "-Infinity"}, -math.inf),
        ({"intValue": 1e3}, 1000),
        ({"boolValue": True}, True),
    ],
)
def test_json_values_outside_the_fast_path_still_parse(value, expected):
    body = _one_span_json(attributes=[{"key": "v", "value": value}])
    (span,) = decode_request(parse_json_request(body))
    got = span.attributes["v"]
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


def test_sanitize_with_many_invalid_spans_keeps_the_valid_ones_in_order():
    n = 1000  # above the in-place deletion threshold: the rebuild path
    req = pb_request([pb_span(i, trace_id=bytes(16)) if i % 3 else pb_span(i) for i in range(n)])
    req = ExportTraceServiceRequest.FromString(req.SerializeToString())
    accepted, rejected, _ = sanitize_request(req, 100)
    assert (accepted, rejected) == (334, 666)
    assert [s.name for s in decode_request(req)] == [f"span-{i}" for i in range(0, n, 3)]
