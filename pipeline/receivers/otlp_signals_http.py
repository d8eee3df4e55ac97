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

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from pipeline.otlp.errors import OtlpDecodeError
from pipeline.otlp.json_mapping import parse_json_logs_request, parse_json_metrics_request
from pipeline.receivers.otlp_export import Outcome
from pipeline.receivers.otlp_http import (
    _HTTP_STATUS,
    _JSON_INLINE_BYTES,
    _WBITS,
    JSON,
    PROTOBUF,
    _read_body,
    _reply,
    _TooLarge,
)
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
        ctype = request.content_type
        if ctype == PROTOBUF:
            as_json = False
        elif ctype == JSON:
            as_json = True
        else:
            return receiver._error(415, f"unsupported Content-Type {ctype[:100]!r}; use {PROTOBUF} or {JSON}", True)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in _WBITS and encoding not in ("identity", ""):
            return receiver._error(
                415, f"unsupported Content-Encoding {encoding[:50]!r}; use gzip, deflate or identity", as_json
            )
        limit = receiver.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return receiver._error(
                413, f"body of {request.content_length} bytes exceeds the limit of {limit} bytes", as_json
            )
        try:
            body = await _read_body(request, limit, _WBITS.get(encoding))
        except _TooLarge as e:
            return receiver._error(413, str(e), as_json)
        except OtlpDecodeError as e:
            return receiver._error(400, e.message, as_json)
        try:
            if not as_json:
                req = parse_pb(body)
            elif len(body) > _JSON_INLINE_BYTES:
                req = await asyncio.to_thread(parse_json, body)
            else:
                req = parse_json(body)
        except OtlpDecodeError as e:
            return receiver._error(400, e.message, as_json)
        except (DecodeError, UnicodeDecodeError) as e:
            return receiver._error(400, f"malformed OTLP protobuf: {e}", as_json)
        result = await export(req)
        if result.outcome is Outcome.ACCEPTED:
            receiver._count("partial" if result.partial else "ok")
            return _reply(200, result.response, as_json)
        status = _HTTP_STATUS[result.outcome]
        return receiver._error(status, result.message, as_json, retry=result.outcome is not Outcome.TOO_LARGE)

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
