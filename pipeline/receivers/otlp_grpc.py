"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on grpc.aio.

Answers, per the OTLP spec (protocol/exporter "Failures"):
- success (OK) only after the transport accepted the spans; spans rejected as invalid
  are reported in `partial_success` (rejected_spans, error_message), the rest is kept;
- RESOURCE_EXHAUSTED + RetryInfo(retry_after) when the queue is full: RESOURCE_EXHAUSTED
  is retryable for OTLP clients exactly when the server sends RetryInfo;
- UNAVAILABLE + RetryInfo while shutting down or when the transport (Kafka) is down;
- INVALID_ARGUMENT, not retryable, for malformed protobuf (including invalid UTF-8 in
  string fields), more spans than max_spans_per_request, or a request larger than the
  whole queue. RESOURCE_EXHAUSTED without RetryInfo would also be non-retryable by the
  spec, but the OTel SDK exporters (Python's among them) retry RESOURCE_EXHAUSTED
  regardless, so a request that can never fit would be resent until its deadline;
  INVALID_ARGUMENT is non-retryable for every client.
RetryInfo goes both into the standard rich status (`grpc-status-details-bin`, a
google.rpc.Status, read by the Go collector's exporter) and as `google.rpc.retryinfo-bin`
trailing metadata, which the Python SDK exporter reads.

The request is deserialized here rather than by grpc so that malformed protobuf gets
INVALID_ARGUMENT with a message instead of grpc's generic INTERNAL. gzip-compressed
requests are decompressed by grpc; requests over grpc.max_recv_message_bytes are refused
by grpc itself with RESOURCE_EXHAUSTED.

Metrics: receiver_requests{receiver,code} with code ok, partial, or the lowercase gRPC
status name; spans as in pipeline/receivers/otlp_export.py.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceServicer

from pipeline.config import OtlpReceiverConfig
from pipeline.receivers.otlp_export import ExportHandler, Outcome
from pipeline.telemetry import Telemetry
from pipeline.transport import RequestTransport

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"

_CODES = {
    Outcome.RETRY_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Outcome.RETRY_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Outcome.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
}


def _status_metadata(code: grpc.StatusCode, message: str, retry_after: int | None) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying google.rpc.Status (and RetryInfo when retryable)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is None:
        return (("grpc-status-details-bin", status.SerializeToString()),)
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after))
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class OtlpGrpcReceiver(TraceServiceServicer):
    """OTLP/gRPC trace receiver bound to `cfg.grpc.endpoint` (port 0 binds a free port)."""

    def __init__(
        self,
        receiver_id: str,
        cfg: OtlpReceiverConfig,
        transport: RequestTransport,
        telemetry: Telemetry,
        logger: logging.Logger | None = None,
    ) -> None:
        if cfg.grpc is None:
            raise ValueError(f"receivers.{receiver_id}.grpc is disabled")
        self.receiver_id = receiver_id
        self.cfg = cfg
        self.telemetry = telemetry
        self.log = logger or logging.getLogger(f"tracepipe.receiver.{receiver_id}")
        self.handler = ExportHandler(receiver_id, cfg, transport, telemetry, self.log)
        self._server: grpc.aio.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        return self._port

    async def start(self) -> None:
        assert self.cfg.grpc is not None
        max_bytes = self.cfg.grpc.max_recv_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ]
        )
        handler = grpc.unary_unary_rpc_method_handler(
            self._export_bytes, response_serializer=ExportTraceServiceResponse.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),))
        endpoint = self.cfg.grpc.endpoint
        try:
            port = server.add_insecure_port(endpoint)
        except RuntimeError as e:
            raise OSError(f"receivers.{self.receiver_id}.grpc: cannot listen on {endpoint}: {e}") from None
        if not port:
            raise OSError(f"receivers.{self.receiver_id}.grpc: cannot listen on {endpoint}")
        await server.start()
        self._server = server
        self._port = port
        self.log.info("OTLP/gRPC receiver %s listening on %s (port %d)", self.receiver_id, endpoint, port)

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)

    def _count(self, code: str) -> None:
        self.telemetry.receiver_requests.labels(self.receiver_id, code).inc()

    async def _export_bytes(self, data: bytes, context: grpc.aio.ServicerContext) -> ExportTraceServiceResponse:
        try:
            request = ExportTraceServiceRequest.FromString(data)
        except (DecodeError, UnicodeDecodeError) as e:
            self._count("invalid_argument")
            message = f"malformed OTLP protobuf: {e}"
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, message, _status_metadata(code, message, None))
        return await self.Export(request, context, raw=data)

    async def Export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext, raw: bytes | None = None
    ) -> ExportTraceServiceResponse:
        result = await self.handler.export(request, raw=raw)
        if result.outcome is Outcome.ACCEPTED:
            self._count("partial" if result.partial else "ok")
            return result.response
        code = _CODES[result.outcome]
        self._count(code.name.lower())
        retry = None if result.outcome is Outcome.TOO_LARGE else self.cfg.retry_after
        await context.abort(code, result.message, _status_metadata(code, result.message, retry))
        raise AssertionError("unreachable: abort raises")
