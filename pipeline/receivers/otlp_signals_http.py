"""OTLP/HTTP logs and metrics: `POST /v1/logs` and `POST /v1/metrics` on the trace receiver's
own aiohttp app (same port, body limit, gzip/deflate handling, error answers, and whatever
middlewares the trace receiver's app has, auth included).

Answers as `POST /v1/traces` does (see pipeline/receivers/otlp_http.py): 200 +
Export{Logs,Metrics}ServiceResponse (with partial_success for invalid log records) in the
request's encoding, 400 malformed, 413 too large (body, or more records / data points than
max_spans_per_request), 415 wrong Content-Type / Content-Encoding, 429 + Retry-After when the
logs store is busy, 503 + Retry-After when it is unavailable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from pipeline.otlp.json_mapping import parse_json_logs_request, parse_json_metrics_request
from pipeline.receivers.otlp_signals import SignalResult, signal_handler_of

LOGS_PATH = "/v1/logs"
METRICS_PATH = "/v1/metrics"


def _route(
    receiver: Any,
    parse_pb: Callable[[bytes], Message],
    parse_json: Callable[[bytes], Message],
    export: Callable[[Any], Awaitable[SignalResult]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        read = await receiver.read_request(request, parse_pb, parse_json)
        if isinstance(read, web.Response):
            return read
        req, _body, as_json = read
        result = await export(req)
        return receiver.answer(result.outcome, result.partial, result.response, result.message, as_json)

    return handle


def add_signal_routes(app: web.Application, receiver: Any) -> None:
    """Register `POST /v1/logs` and `POST /v1/metrics` for `receiver` (an OtlpHttpReceiver)."""
    handler = signal_handler_of(receiver)
    app.router.add_post(
        LOGS_PATH, _route(receiver, ExportLogsServiceRequest.FromString, parse_json_logs_request, handler.export_logs)
    )
    app.router.add_post(
        METRICS_PATH,
        _route(receiver, ExportMetricsServiceRequest.FromString, parse_json_metrics_request, handler.export_metrics),
    )
