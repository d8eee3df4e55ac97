"""Bad input is a 4xx with a message naming what is wrong, never a 500 or a traceback: over
OTLP/HTTP (protobuf, JSON, gzip, deflate), OTLP/gRPC and every query-API parameter, against
one real `tracepipe run`. Also: the one nesting-depth limit at N and N+1 in both encodings,
value truncation, and the 15 MiB model name that used to block the loop."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline.otlp.json_mapping import parse_json_request
from pipeline.otlp.limits import MAX_ARRAY_DEPTH, MAX_KVLIST_DEPTH, decode_protobuf, enforce_value_limits
from pipeline.spans import Span, SpanBatch
from tests.pipeline_proc import PipelineProcess, start_pipeline
from tests.test_cost import genai, make_proc

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
VALUE_LIMIT = 1000
NAME_LIMIT = 100
CONFIG = f"""
receivers:
  otlp:
    max_attribute_value_length: {VALUE_LIMIT}
    max_span_name_length: {NAME_LIMIT}
processors:
  normalize: {{}}
  cost: {{}}
sinks:
  clickhouse: {{}}
  budgets:
    budgets:
      user_daily:
        scope: user
        period: day
        limit: {{usd: 1.0}}
transport:
  type: memory
service:
  pipelines:
    traces:
      processors: [normalize, cost]
      sinks: [clickhouse, budgets]
"""


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineProcess]:
    root = tmp_path_factory.mktemp("malformed")
    config = root / "tracepipe.yaml"
    config.write_text(CONFIG)
    p = start_pipeline(root / "data", "-c", str(config))
    try:
        yield p
    finally:
        p.stop()
    log = p.log()
    assert "Traceback" not in log, log[-4000:]


# --- request builders -------------------------------------------------------------------


def _tid() -> str:
    return uuid.uuid4().hex


def json_doc(trace_id: str, **span: Any) -> dict[str, Any]:
    now = time.time_ns()
    sp = {"traceId": trace_id, "spanId": "00000000000000a1", "name": "op",
          "startTimeUnixNano": str(now - 10**9), "endTimeUnixNano": str(now), **span}
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fz"}}]},
                               "scopeSpans": [{"spans": [sp]}]}]}


def pb_req(trace_id: str, name: str = "op") -> ExportTraceServiceRequest:
    now = time.time_ns()
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "fz"
    rs.scope_spans.add().spans.add(trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex("00000000000000a1"),
                                   name=name, start_time_unix_nano=now - 10**9, end_time_unix_nano=now)
    return req


def nest_pb(av: AnyValue, depth: int, kind: str) -> None:
    """`depth` AnyValue levels (1 = a scalar) of kvlists or arrays."""
    for _ in range(depth - 1):
        av = av.kvlist_value.values.add(key="k").value if kind == "kv" else av.array_value.values.add()
    av.string_value = "leaf"


def nest_json(depth: int, kind: str) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth - 1):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}} if kind == "kv" else \
            {"arrayValue": {"values": [value]}}
    return value


def post(p: PipelineProcess, body: bytes, ctype: str, encoding: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    rq = urllib.request.Request(p.otlp_http + "/v1/traces", data=body, headers=headers)
    try:
        with urllib.request.urlopen(rq, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def error_message(status: int, body: bytes, ctype: str) -> str:
    if ctype == "application/json":
        return json.loads(body).get("message", "")
    return status_pb2.Status.FromString(body).message


def grpc_export(p: PipelineProcess, data: bytes) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(p.otlp_grpc) as ch:
        call = ch.unary_unary(METHOD, response_deserializer=ExportTraceServiceResponse.FromString)
        try:
            call(data, timeout=60)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""


def stored(p: PipelineProcess, trace_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = p.get(f"/api/traces/{trace_id}")
        if status == 200:
            return body
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id} not stored")


# --- OTLP/JSON: the measured 500s and what fuzzing found -----------------------------------

BAD_JSON = {
    "integer_of_5000_digits": (lambda t: json.dumps(json_doc(t)).replace(
        '"name": "op"', '"name": "op", "flags": ' + "9" * 5000), "4300 digits"),
    "status_code_minus_infinity": (lambda t: json.dumps(json_doc(t, status={"code": 0})).replace(
        '"code": 0', '"code": -Infinity'), "-Infinity"),
    "double_nan_token": (lambda t: json.dumps(json_doc(t, attributes=[{"key": "x", "value": {"doubleValue": 0}}]))
                         .replace('"doubleValue": 0', '"doubleValue": NaN'), "NaN"),
    "lone_surrogate_in_name": (lambda t: json.dumps(json_doc(t, name="\ud800")), "surrogate"),
    "lone_surrogate_in_value": (lambda t: json.dumps(
        json_doc(t, attributes=[{"key": "x", "value": {"stringValue": "a\udfffb"}}])), "surrogate"),
    "kind_1e400": (lambda t: json.dumps(json_doc(t)).replace('"name": "op"', '"name": "op", "kind": 1e400'),
                   "invalid"),
    "start_time_not_a_number": (lambda t: json.dumps(json_doc(t, startTimeUnixNano="soon")), "startTimeUnixNano"),
    "attributes_not_an_array": (lambda t: json.dumps(json_doc(t, attributes=5)), "attributes"),
    "resource_spans_not_objects": (lambda t: '{"resourceSpans": [1, 2]}', "resourceSpans[0]"),
    "kvlist_one_past_the_depth_limit": (lambda t: json.dumps(
        json_doc(t, attributes=[{"key": "d", "value": nest_json(MAX_KVLIST_DEPTH + 1, "kv")}])), "nested too deeply"),
    "truncated_body": (lambda t: json.dumps(json_doc(t))[:-7], "malformed JSON"),
}


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_malformed_json_is_400_naming_the_problem(pipe: PipelineProcess, case: str, encoding: str | None) -> None:
    make, expected = BAD_JSON[case]
    body = make(_tid()).encode("utf-8", "surrogatepass")
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    status, resp = post(pipe, body, "application/json", encoding)
    assert status == 400, (status, resp[:300])
    message = error_message(status, resp, "application/json")
    assert expected.lower() in message.lower(), message


def test_bad_compression_and_content_types_are_4xx(pipe: PipelineProcess) -> None:
    good = pb_req(_tid()).SerializeToString()
    assert post(pipe, good[:len(good) // 2] + b"\xff\xff", "application/x-protobuf")[0] == 400
    assert post(pipe, b"not gzip at all", "application/x-protobuf", "gzip")[0] == 400
    assert post(pipe, gzip.compress(good)[:-9], "application/x-protobuf", "gzip")[0] == 400
    assert post(pipe, zlib.compress(good)[:-3], "application/x-protobuf", "deflate")[0] == 400
    assert post(pipe, good, "text/plain")[0] == 415
    assert post(pipe, good, "application/x-protobuf", "br")[0] == 415


RAW_HTTP = {
    "bad_chunk_size": b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nxx\r\n0\r\n\r\n",
    "negative_content_length": b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: -5\r\n\r\n",
    "header_too_long": b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: " + b"a" * 20000 + b"\r\n\r\n",
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100),
}


@pytest.mark.parametrize("port", ["otlp", "api"])
@pytest.mark.parametrize("case", sorted(RAW_HTTP))
def test_broken_http_framing_is_400_without_a_traceback(pipe: PipelineProcess, case: str, port: str) -> None:
    with socket.create_connection(("127.0.0.1", pipe.http_port if port == "otlp" else pipe.api_port), timeout=30) as s:
        s.sendall(RAW_HTTP[case])
        head = s.recv(64)
    assert head.startswith(b"HTTP/1.") and b" 400 " in head, head
    assert "Traceback" not in pipe.log()  # aiohttp logs before it answers


def test_client_leaving_mid_body_leaves_no_traceback(pipe: PipelineProcess) -> None:
    with socket.create_connection(("127.0.0.1", pipe.http_port), timeout=30) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: 1000\r\n\r\n0123456789")
    tid = _tid()  # the receiver carries on
    assert post(pipe, pb_req(tid).SerializeToString(), "application/x-protobuf")[0] == 200
    assert "Traceback" not in pipe.log()


def test_malformed_protobuf_is_invalid_argument_over_grpc(pipe: PipelineProcess) -> None:
    good = pb_req(_tid()).SerializeToString()
    code, message = grpc_export(pipe, good[:-5] + b"\x0a\xff\xff\xff\xff\x0f")
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "malformed OTLP protobuf" in message


# --- one depth limit, both encodings, at N and N+1 ---------------------------------------


@pytest.mark.parametrize(("kind", "limit"), [("kv", MAX_KVLIST_DEPTH), ("array", MAX_ARRAY_DEPTH)])
def test_depth_limit_is_the_decoders_limit_in_both_encodings(pipe: PipelineProcess, kind: str, limit: int) -> None:
    # at the limit: accepted by JSON, HTTP protobuf and gRPC, and stored
    at_json = _tid()
    doc = json_doc(at_json, attributes=[{"key": "deep", "value": nest_json(limit, kind)}])
    assert post(pipe, json.dumps(doc).encode(), "application/json")[0] == 200
    at_pb, at_grpc = _tid(), _tid()
    for tid, send in ((at_pb, "http"), (at_grpc, "grpc")):
        req = pb_req(tid)
        nest_pb(req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="deep").value, limit, kind)
        if send == "http":
            assert post(pipe, req.SerializeToString(), "application/x-protobuf")[0] == 200
        else:
            assert grpc_export(pipe, req.SerializeToString())[0] is grpc.StatusCode.OK
    for tid in (at_json, at_pb, at_grpc):
        assert stored(pipe, tid)["trace_id"] == tid
    # one past it: refused by all three with the same message
    over = json_doc(_tid(), attributes=[{"key": "deep", "value": nest_json(limit + 1, kind)}])
    status, body = post(pipe, json.dumps(over).encode(), "application/json")
    assert status == 400 and "nested too deeply" in error_message(status, body, "application/json")
    req = pb_req(_tid())
    nest_pb(req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="deep").value, limit + 1, kind)
    status, body = post(pipe, req.SerializeToString(), "application/x-protobuf")
    assert status == 400 and "nested too deeply" in error_message(status, body, "application/x-protobuf")
    code, message = grpc_export(pipe, req.SerializeToString())
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "nested too deeply" in message


def test_an_accepted_json_request_always_decodes_again_in_event_attributes_too() -> None:
    for depth, ok in ((MAX_KVLIST_DEPTH, True), (MAX_KVLIST_DEPTH + 1, False)):
        doc = json_doc(_tid(), events=[{"name": "e", "timeUnixNano": "1",
                                        "attributes": [{"key": "d", "value": nest_json(depth, "kv")}]}])
        try:
            req = parse_json_request(json.dumps(doc).encode())
        except ValueError as e:
            assert not ok and "nested too deeply" in str(e)
        else:
            assert ok
            assert decode_protobuf(req.SerializeToString()) == req


# --- value limits -------------------------------------------------------------------------


def test_over_long_values_and_names_are_truncated_and_flagged(pipe: PipelineProcess) -> None:
    tid = _tid()
    req = pb_req(tid, name="n" * (NAME_LIMIT * 5))
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    sp.attributes.add(key="gen_ai.prompt").value.string_value = "p" * (VALUE_LIMIT * 20)
    sp.attributes.add(key="short").value.string_value = "kept"
    nested = sp.attributes.add(key="nested").value.array_value.values.add()
    nested.string_value = "q" * (VALUE_LIMIT + 1)
    assert post(pipe, req.SerializeToString(), "application/x-protobuf")[0] == 200
    span = stored(pipe, tid)["spans"][0]
    assert span["name"] == "n" * NAME_LIMIT
    attrs = span["attributes"]
    assert attrs["gen_ai.prompt"] == "p" * VALUE_LIMIT and attrs["short"] == "kept"
    flagged = attrs["tracepipe.truncated"]
    flagged = json.loads(flagged) if isinstance(flagged, str) else flagged
    assert set(flagged) == {"name", "gen_ai.prompt", "nested"}
    assert 'field="attribute_value"' in pipe.metrics()


def test_requests_smaller_than_the_limits_are_not_touched() -> None:
    req = pb_req(_tid(), name="x" * 50)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="a").value.string_value = "y" * 500
    before = req.SerializeToString()
    result = enforce_value_limits(req, 1000, 100, len(before))
    assert not result.any and req.SerializeToString() == before


def test_over_long_model_name_is_never_looked_up_logged_or_labelled(caplog: pytest.LogCaptureFixture) -> None:
    """The 15 MiB model name spent 3.1 s in genai-prices' model matching and wrote a 15 MB log
    line. Now it is unpriced without a lookup: even an override glob that matches it is not
    consulted, the log line stays short and the metric label is not the name."""
    proc = make_proc(overrides=[{"model": "gpt-4o-*", "input_per_mtok": 1.0, "output_per_mtok": 1.0}])
    long_name = "gpt-4o-" + "m" * (15 * 1024 * 1024)
    spans = [Span("0" * 32, "1" * 16, "chat", 1, 2, attributes=genai(long_name, 10, 5, provider="openai")),
             Span("0" * 32, "2" * 16, "chat", 1, 2, attributes=genai("gpt-4o-mine", 10, 5, provider="openai"))]
    with caplog.at_level(logging.WARNING):
        proc.process(SpanBatch(spans, "b"))
    assert spans[0].attributes["tracepipe.cost.unpriced"] is True
    assert spans[1].attributes["gen_ai.usage.cost_usd"] > 0  # the override itself works
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    exposition = proc.ctx.telemetry.registry.collect()
    assert all(len(s.labels.get("model", "")) < 300 for m in exposition for s in m.samples)


# --- the query API ---------------------------------------------------------------------

BAD_API = [
    "/api/traces?since=" + "9" * 400 + "d",
    "/api/traces?since=1e309s",
    "/api/traces?since=" + "1" * 40 + "m",
    "/api/traces?since=0m",
    "/api/traces?limit=" + "9" * 5000,
    "/api/traces?limit=0",
    "/api/traces?limit=1.5",
    "/api/traces?min_cost=inf",
    "/api/traces?min_cost=1e309",
    "/api/traces?min_cost=nan",
    "/api/traces?min_cost=-1",
    "/api/traces?cursor=%%%",
    "/api/traces?cursor=" + "A" * 5000,
    "/api/traces?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5",
    "/api/traces?status=maybe",
    "/api/traces?service=" + "s" * 5000,
    "/api/traces?nope=1",
    "/api/traces/not-a-trace-id",
    "/api/traces/" + "a" * 5000,
    "/api/analytics/cost?since=" + "9" * 400 + "h",
    "/api/analytics/cost?by=planet",
    "/api/analytics/cost?since=-5m",
    "/api/budgets/check?user=u1&estimated_usd=inf",
    "/api/budgets/check?user=u1&estimated_usd=1e309",
    "/api/budgets/check?user=u1&estimated_usd=nan",
    "/api/budgets/check?user=u1&estimated_usd=-0.5",
    "/api/budgets/check?user=u1&estimated_tokens=" + "9" * 400,
    "/api/budgets/check?user=u1&estimated_tokens=-3",
    "/api/budgets/check?user=" + "u" * 5000,
    "/api/budgets/check?planet=earth",
    "/api/budgets/user/" + "u" * 5000,
    "/api/alerts?limit=" + "9" * 400,
    "/api/alerts?state=sideways",
]


@pytest.mark.parametrize("path", BAD_API, ids=lambda p: p[:60])
def test_bad_query_parameters_are_4xx_naming_the_parameter(pipe: PipelineProcess, path: str) -> None:
    status, body = pipe.get(path)
    assert 400 <= status < 500, (status, body)
    assert isinstance(body, dict) and body.get("error") and len(body["error"]) < 400


def test_good_query_parameters_still_work(pipe: PipelineProcess) -> None:
    assert pipe.get("/api/traces?since=15m&limit=5&min_cost=0")[0] == 200
    assert pipe.get("/api/analytics/cost?by=model&since=1.5h")[0] == 200
    assert pipe.get("/api/budgets/check?user=u1&estimated_usd=0.01&estimated_tokens=10")[0] == 200


def test_pipeline_healthy_after_all_of_it(pipe: PipelineProcess, tmp_path: Path) -> None:
    tid = _tid()
    assert post(pipe, pb_req(tid).SerializeToString(), "application/x-protobuf")[0] == 200
    assert stored(pipe, tid)["trace_id"] == tid
    assert pipe.get("/readyz")[0] == 200
    assert pipe.proc.poll() is None
