"""The OTLP/gRPC receiver, driven by the real OTel SDK exporter and by raw grpc calls,
in front of a real MemoryTransport."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from pipeline.otlp.validate import count_spans
from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
from tests.otlp_support import Rig, assert_same_spans, bad_utf8_request, good_request, pb_request, pb_span, running
from tests.otlp_support import sdk_spans as make_sdk_spans

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def export_raw(rig: Rig, data: bytes | ExportTraceServiceRequest, **kw) -> ExportTraceServiceResponse:
    if isinstance(data, ExportTraceServiceRequest):
        data = data.SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rig.port}") as channel:
        call = channel.unary_unary(METHOD, response_deserializer=ExportTraceServiceResponse.FromString)
        return await call(data, timeout=10, **kw)


async def export_error(rig: Rig, data: bytes | ExportTraceServiceRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await export_raw(rig, data)
    return err.value


def retry_delay(err: grpc.aio.AioRpcError) -> tuple[float | None, float | None]:
    """RetryInfo delay from the rich status details and from the Python SDK's metadata key."""
    md = dict(err.trailing_metadata() or ())
    rich = None
    if "grpc-status-details-bin" in md:
        status = status_pb2.Status.FromString(md["grpc-status-details-bin"])
        assert status.code == err.code().value[0] and status.message == err.details()
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                rich = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    plain = None
    if "google.rpc.retryinfo-bin" in md:
        info = error_details_pb2.RetryInfo.FromString(md["google.rpc.retryinfo-bin"])
        plain = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return rich, plain


@pytest.fixture
def sdk_spans():
    return make_sdk_spans()


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
async def test_sdk_exporter_spans_arrive_intact(sdk_spans, compression):
    async with running(OtlpGrpcReceiver) as rig:
        assert rig.port > 0
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{rig.port}", insecure=True, compression=compression)
        try:
            assert await asyncio.to_thread(exporter.export, sdk_spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert_same_spans(await rig.take_spans(), sdk_spans)
        assert rig.metric("receiver_accepted_spans", receiver="otlp") == 3
        assert rig.metric("receiver_requests", receiver="otlp", code="ok") == 1


async def test_invalid_ids_get_partial_success_and_the_rest_is_accepted():
    req = pb_request([pb_span(0), pb_span(1, trace_id=bytes(16)), pb_span(2, span_id=b"\x01"), pb_span(3)])
    async with running(OtlpGrpcReceiver) as rig:
        resp = await export_raw(rig, req)
        assert resp.partial_success.rejected_spans == 2
        assert "invalid trace id" in resp.partial_success.error_message
        assert "invalid span id" in resp.partial_success.error_message
        assert [s.name for s in await rig.take_spans()] == ["span-0", "span-3"]
        assert rig.metric("receiver_refused_spans", receiver="otlp", reason="invalid") == 2
        assert rig.metric("dropped_spans", reason="invalid_trace_id") == 1
        assert rig.metric("receiver_requests", receiver="otlp", code="partial") == 1


async def test_request_with_only_invalid_spans_gets_partial_success_and_enqueues_nothing():
    async with running(OtlpGrpcReceiver, max_attributes_per_span=3) as rig:
        resp = await export_raw(rig, pb_request([pb_span(0, attrs=4)]))
        assert resp.partial_success.rejected_spans == 1
        assert "more than 3 attributes" in resp.partial_success.error_message
        assert rig.transport.size == 0
        assert rig.metric("dropped_spans", reason="too_many_attributes") == 1


async def test_queue_full_is_resource_exhausted_with_retry_info_and_the_retry_lands():
    async with running(OtlpGrpcReceiver, capacity=5, retry_after=2) as rig:
        await export_raw(rig, good_request(3))
        err = await export_error(rig, good_request(3, first=10))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_delay(err) == (2.0, 2.0)
        assert rig.metric("receiver_refused_spans", receiver="otlp", reason="queue_full") == 3
        assert rig.metric("receiver_requests", receiver="otlp", code="resource_exhausted") == 1
        assert len(await rig.take_spans()) == 3  # a worker took and released a batch: room again
        await export_raw(rig, good_request(3, first=10))
        assert [s.name for s in await rig.take_spans()] == ["span-10", "span-11", "span-12"]


async def test_sdk_exporter_backs_off_on_resource_exhausted_and_succeeds_once_room_is_made(sdk_spans):
    async with running(OtlpGrpcReceiver, capacity=4) as rig:
        await export_raw(rig, good_request(3))  # the queue now has room for 1 span, the SDK sends 3
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{rig.port}", insecure=True, timeout=20)
        try:
            sending = asyncio.create_task(asyncio.to_thread(exporter.export, sdk_spans))
            refused = {"receiver": "otlp", "reason": "queue_full"}
            while rig.metric("receiver_refused_spans", **refused) == 0:
                await asyncio.sleep(0.01)
            assert not sending.done()  # backing off per RetryInfo (1 s), not failed
            assert len(await rig.take_spans()) == 3
            assert await sending == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert_same_spans(await rig.take_spans(), sdk_spans)


async def test_closed_transport_is_unavailable_with_retry_info():
    async with running(OtlpGrpcReceiver) as rig:
        await rig.transport.close()
        err = await export_error(rig, good_request(2))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert retry_delay(err) == (1.0, 1.0)
        assert rig.metric("receiver_refused_spans", receiver="otlp", reason="closed") == 2


@pytest.mark.parametrize(
    ("capacity", "max_spans", "fragment"),
    [(1000, 5, "more than max_spans_per_request (5)"), (5, 1000, "larger than the whole transport queue")],
)
async def test_request_that_can_never_fit_is_invalid_argument_without_retry(capacity, max_spans, fragment):
    async with running(OtlpGrpcReceiver, capacity=capacity, max_spans_per_request=max_spans) as rig:
        err = await export_error(rig, good_request(6))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in err.details()
        assert retry_delay(err) == (None, None)
        await export_raw(rig, good_request(2))
        assert len(await rig.take_spans()) == 2


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"\x0a\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "malformed OTLP protobuf"),
        (bad_utf8_request(), grpc.StatusCode.INVALID_ARGUMENT, "UTF-8"),
        (good_request(1).SerializeToString() + b"\x00" * 3000, grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    ],
    ids=["malformed", "invalid-utf8", "over-max-message-size"],
)
async def test_bad_input_gets_its_status_and_the_next_request_is_served(payload, code, fragment):
    async with running(OtlpGrpcReceiver, grpc={"max_recv_message_bytes": 2048}) as rig:
        err = await export_error(rig, payload)
        assert err.code() == code
        assert fragment in (err.details() or "")
        resp = await export_raw(rig, good_request(2))
        assert not resp.HasField("partial_success")
        assert len(await rig.take_spans()) == 2


async def test_gzip_request_from_a_raw_client_is_accepted():
    async with running(OtlpGrpcReceiver) as rig:
        req = good_request(4)
        await export_raw(rig, req, compression=grpc.Compression.Gzip)
        taken = await rig.transport.take(100, 0)
        assert taken is not None and taken.items[0].request == req and count_spans(taken.items[0].request) == 4


async def test_stop_releases_the_port_and_a_busy_port_fails_clearly():
    async with running(OtlpGrpcReceiver) as rig:
        port = rig.port
        with pytest.raises(OSError, match="cannot listen"):
            async with running(OtlpGrpcReceiver, grpc={"endpoint": f"127.0.0.1:{port}"}):
                pass
    async with running(OtlpGrpcReceiver, grpc={"endpoint": f"127.0.0.1:{port}"}) as again:
        assert again.port == port
