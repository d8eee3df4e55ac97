"""The OTLP/HTTP receiver, driven by the real OTel SDK exporter and by raw protobuf/JSON
requests over aiohttp, in front of a real MemoryTransport."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from typing import Any

import aiohttp
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from pipeline.receivers.otlp_http import OtlpHttpReceiver
from tests.otlp_support import Rig, assert_same_spans, bad_utf8_request, good_request, pb_request, pb_span, running
from tests.otlp_support import sdk_spans as make_sdk_spans

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
TRACE_ID = "5b8efff798038103d269b633813fc60c"


async def post(rig: Rig, body: Any, headers: dict[str, str], path: str = "/v1/traces", method: str = "POST"):
    """(status, headers, body) of one request."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(method, f"http://127.0.0.1:{rig.port}{path}", data=body, headers=headers) as r,
    ):
        return r.status, r.headers, await r.read()


def json_body(*spans: dict) -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
                    "scopeSpans": [{"scope": {"name": "raw"}, "spans": list(spans)}],
                }
            ]
        }
    ).encode()


def json_span(span_id: str, **extra: object) -> dict:
    return {
        "traceId": TRACE_ID,
        "spanId": span_id,
        "name": f"span-{span_id}",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001200000000",
        **extra,
    }


def rpc_status(body: bytes, headers) -> status_pb2.Status:
    if headers["Content-Type"].startswith("application/json"):
        doc = json.loads(body)
        return status_pb2.Status(code=doc.get("code", 0), message=doc.get("message", ""))
    return status_pb2.Status.FromString(body)


async def assert_serves_next_request(rig: Rig) -> None:
    status, headers, body = await post(rig, good_request(2, first=100).SerializeToString(), PROTOBUF)
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()
    assert [s.name for s in await rig.take_spans()] == ["span-100", "span-101"]


@pytest.fixture
def sdk_spans():
    return make_sdk_spans()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
async def test_sdk_exporter_spans_arrive_intact(sdk_spans, compression):
    async with running(OtlpHttpReceiver) as rig:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{rig.port}/v1/traces", compression=compression)
        try:
            assert await asyncio.to_thread(exporter.export, sdk_spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert_same_spans(await rig.take_spans(), sdk_spans)
        assert rig.metric("receiver_accepted_spans", receiver="otlp") == 3
        assert rig.metric("receiver_requests", receiver="otlp", code="ok") == 1


async def test_otlp_json_with_hex_ids_is_accepted_and_answered_in_json():
    async with running(OtlpHttpReceiver) as rig:
        body = json_body(json_span("eee19b7ec3c1b174"), json_span("00f067aa0ba902b7", parentSpanId="eee19b7ec3c1b174"))
        status, headers, resp = await post(rig, gzip.compress(body), {**JSON, "Content-Encoding": "gzip"})
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert json.loads(resp) == {}
        spans = await rig.take_spans()
        assert [(s.trace_id, s.span_id, s.parent_span_id) for s in spans] == [
            (TRACE_ID, "eee19b7ec3c1b174", ""),
            (TRACE_ID, "00f067aa0ba902b7", "eee19b7ec3c1b174"),
        ]
        assert spans[0].duration_ns == 1_200_000_000 and spans[0].service_name == "json-app"


async def test_invalid_spans_get_partial_success_in_json_and_the_rest_is_accepted():
    many_attrs = [{"key": f"k{i}", "value": {"intValue": i}} for i in range(4)]
    body = json_body(
        json_span("eee19b7ec3c1b174"),
        json_span("00f067aa0ba902b7", traceId="0" * 32),
        json_span("1111111111111111", attributes=many_attrs),
    )
    async with running(OtlpHttpReceiver, max_attributes_per_span=3) as rig:
        status, _, resp = await post(rig, body, JSON)
        assert status == 200
        partial = json.loads(resp)["partialSuccess"]
        assert int(partial["rejectedSpans"]) == 2
        assert "invalid trace id" in partial["errorMessage"] and "more than 3 attributes" in partial["errorMessage"]
        assert [s.span_id for s in await rig.take_spans()] == ["eee19b7ec3c1b174"]
        assert rig.metric("receiver_requests", receiver="otlp", code="partial") == 1


async def test_invalid_ids_in_protobuf_get_partial_success_in_protobuf():
    req = pb_request([pb_span(0), pb_span(1, span_id=bytes(8)), pb_span(2, parent=b"\x01\x02")])
    async with running(OtlpHttpReceiver) as rig:
        status, _, resp = await post(rig, req.SerializeToString(), PROTOBUF)
        assert status == 200
        assert ExportTraceServiceResponse.FromString(resp).partial_success.rejected_spans == 2
        assert [s.name for s in await rig.take_spans()] == ["span-0"]
        assert rig.metric("dropped_spans", reason="invalid_parent_span_id") == 1


def _gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes, gzip-compressed (about 1000:1)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([*(comp.compress(zeros) for _ in range(inflated >> 20)), comp.flush()])


BAD_INPUTS = [
    # (id, body, headers, status, message fragment or None, response encoding)
    ("malformed-protobuf", b"\x0a\xff\xff\xff", PROTOBUF, 400, "malformed OTLP protobuf", "protobuf"),
    ("protobuf-invalid-utf8", bad_utf8_request(), PROTOBUF, 400, "UTF-8", "protobuf"),
    ("malformed-json", b'{"resourceSpans": [', JSON, 400, "malformed JSON", "json"),
    ("json-invalid-utf8", b'{"resourceSpans": [{"x": "\xff"}]}', JSON, 400, "not valid UTF-8", "json"),
    ("json-non-hex-id", json_body(json_span("zzzzzzzzzzzzzzzz")), JSON, 400, "spanId: not a hex string", "json"),
    ("json-base64-id", json_body(json_span("7uGbfsPBsXQ=")), JSON, 400, "expected 16 hex characters", "json"),
    ("corrupt-gzip", b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "compressed",
     "protobuf"),
    ("truncated-gzip", gzip.compress(b"x" * 1000)[:20], {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "truncated",
     "protobuf"),
    ("text-plain", b"hello", {"Content-Type": "text/plain"}, 415, "unsupported Content-Type", "json"),
    ("no-content-type", b"", {}, 415, "unsupported Content-Type", "json"),
    ("brotli", b"\x00", {**JSON, "Content-Encoding": "br"}, 415, "unsupported Content-Encoding", "json"),
    ("oversize-body", b"\x00" * 70_000, PROTOBUF, 413, "exceeds the limit of 65536 bytes", "protobuf"),
    ("oversize-gzip-body", _gzip_bomb(2 << 20)[:10] + bytes(70_000), {**PROTOBUF, "Content-Encoding": "gzip"}, 413,
     "exceeds the limit", "protobuf"),
    ("gzip-bomb", _gzip_bomb(64 << 20), {**JSON, "Content-Encoding": "gzip"}, 413, "after decompression", "json"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment", "encoding"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
async def test_bad_input_gets_its_status_and_the_next_request_is_served(body, headers, status, fragment, encoding):
    async with running(OtlpHttpReceiver, http={"max_body_bytes": 65536}) as rig:
        got, resp_headers, resp = await post(rig, body, headers)
        assert got == status
        expected_type = "application/json" if encoding == "json" else "application/x-protobuf"
        assert resp_headers["Content-Type"].startswith(expected_type)
        rpc = rpc_status(resp, resp_headers)
        assert rpc.code == code_pb2.INVALID_ARGUMENT
        assert fragment in rpc.message
        assert "Retry-After" not in resp_headers
        assert rig.metric("receiver_requests", receiver="otlp", code=str(status)) == 1
        assert rig.transport.size == 0
        await assert_serves_next_request(rig)


async def test_gzip_bomb_never_inflates_past_the_limit():
    bomb = _gzip_bomb(256 << 20)  # 256 MB of zeros in ~250 KB
    async with running(OtlpHttpReceiver, http={"max_body_bytes": 1 << 20}) as rig:
        tracemalloc.start()
        try:
            status, _, _ = await post(rig, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413
        assert peak < 8 << 20, f"peak {peak} bytes while refusing a gzip bomb"


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/v1/traces", 405), ("POST", "/v1/profiles", 404)])
async def test_wrong_method_or_path(method, path, status):
    async with running(OtlpHttpReceiver) as rig:
        got, _, _ = await post(rig, good_request(1).SerializeToString(), PROTOBUF, path=path, method=method)
        assert got == status
        await assert_serves_next_request(rig)


async def test_queue_full_is_429_with_retry_after_and_the_same_request_lands_once_room_is_made():
    async with running(OtlpHttpReceiver, capacity=5, retry_after=3) as rig:
        assert (await post(rig, good_request(3).SerializeToString(), PROTOBUF))[0] == 200
        body = json_body(json_span("eee19b7ec3c1b174"), json_span("00f067aa0ba902b7"), json_span("1111111111111111"))
        status, headers, resp = await post(rig, body, JSON)
        assert status == 429 and headers["Retry-After"] == "3"
        doc = json.loads(resp)
        assert doc["code"] == code_pb2.RESOURCE_EXHAUSTED and "queue is full" in doc["message"]
        assert doc["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
        assert rig.metric("receiver_refused_spans", receiver="otlp", reason="queue_full") == 3
        taken = await rig.transport.take(100, 0)  # a worker takes the batch, sinks ack, it is released
        assert taken is not None and taken.spans == 3
        status, _, _ = await post(rig, body, JSON)
        assert status == 429  # still full: the taken batch is in flight until released
        await rig.transport.release(taken)
        status, _, _ = await post(rig, body, JSON)
        assert status == 200
        assert [s.span_id for s in await rig.take_spans()] == [
            "eee19b7ec3c1b174",
            "00f067aa0ba902b7",
            "1111111111111111",
        ]


async def test_sdk_exporter_honours_retry_after_and_succeeds_once_room_is_made(sdk_spans):
    async with running(OtlpHttpReceiver, capacity=4) as rig:
        assert (await post(rig, good_request(3).SerializeToString(), PROTOBUF))[0] == 200
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{rig.port}/v1/traces", timeout=20)
        try:
            sending = asyncio.create_task(asyncio.to_thread(exporter.export, sdk_spans))
            while rig.metric("receiver_requests", receiver="otlp", code="429") == 0:
                await asyncio.sleep(0.01)
            assert not sending.done()
            assert len(await rig.take_spans()) == 3
            assert await sending == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert_same_spans(await rig.take_spans(), sdk_spans)


async def test_closed_transport_is_503_with_retry_after():
    async with running(OtlpHttpReceiver) as rig:
        await rig.transport.close()
        status, headers, resp = await post(rig, good_request(2).SerializeToString(), PROTOBUF)
        assert status == 503 and headers["Retry-After"] == "1"
        status_msg = status_pb2.Status.FromString(resp)
        assert status_msg.code == code_pb2.UNAVAILABLE
        info = error_details_pb2.RetryInfo()
        assert status_msg.details[0].Unpack(info) and info.retry_delay.seconds == 1


@pytest.mark.parametrize(("capacity", "max_spans"), [(1000, 5), (5, 1000)])
async def test_request_that_can_never_fit_is_413_without_retry_after(capacity, max_spans):
    async with running(OtlpHttpReceiver, capacity=capacity, max_spans_per_request=max_spans) as rig:
        status, headers, _ = await post(rig, good_request(6).SerializeToString(), PROTOBUF)
        assert status == 413 and "Retry-After" not in headers
        await assert_serves_next_request(rig)


async def test_chunked_body_over_the_limit_is_413_while_streaming():
    async def chunks():
        for _ in range(20):
            yield bytes(8192)

    async with running(OtlpHttpReceiver, http={"max_body_bytes": 65536}) as rig:
        status, _, _ = await post(rig, chunks(), PROTOBUF)  # no Content-Length: the cap applies while reading
        assert status == 413
        await assert_serves_next_request(rig)


async def test_concatenated_gzip_members_are_one_body():
    data = good_request(4).SerializeToString()
    body = gzip.compress(data[:50]) + gzip.compress(data[50:])
    async with running(OtlpHttpReceiver) as rig:
        status, _, _ = await post(rig, body, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert status == 200
        assert len(await rig.take_spans()) == 4


async def test_large_json_bodies_are_parsed_and_refused_like_small_ones():
    big = "x" * 400_000  # over the size parsed off the event loop
    good = json_body(
        json_span("eee19b7ec3c1b174", attributes=[{"key": "gen_ai.prompt", "value": {"stringValue": big}}])
    )
    bad = good.replace(b'"eee19b7ec3c1b174"', b'"eee19b7ec3c1b17z"')
    async with running(OtlpHttpReceiver) as rig:
        status, _, resp = await post(rig, bad, JSON)
        assert status == 400 and "not a hex string" in json.loads(resp)["message"]
        status, _, _ = await post(rig, good, JSON)
        assert status == 200
        (span,) = await rig.take_spans()
        assert span.attributes["gen_ai.prompt"] == big
