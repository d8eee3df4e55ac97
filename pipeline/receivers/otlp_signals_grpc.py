"""OTLP/gRPC logs and metrics: `LogsService/Export` and `MetricsService/Export` on the trace
receiver's own grpc.aio server (same port, limits, and whatever server options and
interceptors the trace receiver sets, auth included).

Answers as the trace service does (see pipeline/receivers/otlp_grpc.py): OK with
`partial_success` (rejected_log_records) for invalid records, RESOURCE_EXHAUSTED +
RetryInfo when the logs store is busy, UNAVAILABLE + RetryInfo when it is down or shutting
down, INVALID_ARGUMENT for malformed protobuf or too many records / data points.
Requests are counted in `receiver_requests{receiver,code}` like trace requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from pipeline.receivers.otlp_export import Outcome
from pipeline.receivers.otlp_grpc import _CODES, _status_metadata
from pipeline.receivers.otlp_signals import SignalResult, signal_handler_of

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


def _method(
    receiver: Any, parse: Callable[[bytes], Message], export: Callable[[Any], Awaitable[SignalResult]]
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
    def count(code: str) -> None:
        receiver.telemetry.receiver_requests.labels(receiver.receiver_id, code).inc()

    async def handle(data: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = parse(data)
        except (DecodeError, UnicodeDecodeError) as e:
            count("invalid_argument")
            message = f"malformed OTLP protobuf: {e}"
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, message, _status_metadata(code, message, None))
            raise AssertionError("unreachable: abort raises") from None
        result = await export(request)
        if result.outcome is Outcome.ACCEPTED:
            count("partial" if result.partial else "ok")
            return result.response
        code = _CODES[result.outcome]
        count(code.name.lower())
        retry = None if result.outcome is Outcome.TOO_LARGE else receiver.cfg.retry_after
        await context.abort(code, result.message, _status_metadata(code, result.message, retry))
        raise AssertionError("unreachable: abort raises")

    return handle


def signal_rpc_handlers(receiver: Any) -> tuple[grpc.GenericRpcHandler, ...]:
    """Generic handlers for the logs and metrics services, for `server.add_generic_rpc_handlers`."""
    handler = signal_handler_of(receiver)
    logs = grpc.unary_unary_rpc_method_handler(
        _method(receiver, ExportLogsServiceRequest.FromString, handler.export_logs),
        response_serializer=lambda m: m.SerializeToString(),
    )
    metrics = grpc.unary_unary_rpc_method_handler(
        _method(receiver, ExportMetricsServiceRequest.FromString, handler.export_metrics),
        response_serializer=lambda m: m.SerializeToString(),
    )
    return (
        grpc.method_handlers_generic_handler(LOGS_SERVICE, {"Export": logs}),
        grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": metrics}),
    )
