"""OTLP/HTTP receiver: `POST /v1/traces` on aiohttp, protobuf or JSON, identity or gzip.

Answers, per the OTLP spec (OTLP/HTTP "Failures"), always in the request's encoding
(application/x-protobuf or application/json); bodies may be gzip (or deflate) encoded:
- 200 + ExportTraceServiceResponse once the transport accepted the spans, with
  `partial_success` (rejected_spans, error_message) when invalid spans were removed;
- 400 + google.rpc.Status for malformed protobuf or JSON, invalid UTF-8 (upb refuses
  invalid UTF-8 in proto3 string fields), non-hex or wrong-length JSON ids, corrupt gzip,
  attribute values nested deeper than the protobuf decoder reads back (one limit for both
  encodings, pipeline/otlp/limits.py);
- 413 when the body exceeds http.max_body_bytes, compressed or decompressed (gzip is
  inflated incrementally with a cap, so a gzip bomb never allocates more than the limit),
  and when the request has more spans than max_spans_per_request or than the whole queue
  holds: not retryable, the client must split it;
- 415 for another Content-Type or a Content-Encoding other than gzip/deflate/identity;
- 429 + Retry-After when the queue is full, 503 + Retry-After while shutting down or when
  the transport is unavailable: the retryable codes OTLP clients back off on;
- 404 / 405 for other paths / methods (aiohttp routing);
- with auth on (pipeline/auth/): 401 + `WWW-Authenticate: Bearer` without a valid bearer
  token, 403 without the `ingest` scope; the token's tenant is stamped on the request.
`http.tls` serves TLS (mTLS with client_ca_file) with certificates reloaded from disk.

Metrics: receiver_requests{receiver,code} with code ok, partial, or the HTTP status;
spans as in pipeline/receivers/otlp_export.py.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from aiohttp import ClientPayloadError, web
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from pipeline.auth.guard import ListenerAuth
from pipeline.auth.http import PRINCIPAL_KEY, auth_middleware, ingest_scope, refusal
from pipeline.auth.principal import ANONYMOUS
from pipeline.auth.tokens import Failure
from pipeline.client_errors import quiet_client_errors
from pipeline.config import OtlpReceiverConfig, parse_endpoint
from pipeline.otlp.errors import OtlpDecodeError
from pipeline.otlp.json_mapping import parse_json_request, response_to_json
from pipeline.otlp.limits import decode_protobuf
from pipeline.receivers.otlp_export import ExportHandler, Outcome
from pipeline.telemetry import Telemetry
from pipeline.transport import RequestTransport

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CHUNK = 64 * 1024
_JSON_INLINE_BYTES = 256 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # deflate = the zlib format (RFC 9110)

_HTTP_STATUS = {Outcome.RETRY_FULL: 429, Outcome.RETRY_UNAVAILABLE: 503, Outcome.TOO_LARGE: 413}
_RPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


class _TooLarge(Exception):
    pass


class OtlpHttpReceiver:
    """OTLP/HTTP trace receiver bound to `cfg.http.endpoint` (port 0 binds a free port)."""

    def __init__(
        self,
        receiver_id: str,
        cfg: OtlpReceiverConfig,
        transport: RequestTransport,
        telemetry: Telemetry,
        logger: logging.Logger | None = None,
        auth: ListenerAuth | None = None,
    ) -> None:
        if cfg.http is None:
            raise ValueError(f"receivers.{receiver_id}.http is disabled")
        self.receiver_id = receiver_id
        self.kind = "otlp_http"
        self.auth = auth or ListenerAuth(f"{receiver_id}/http", None, None)
        self.cfg = cfg
        self.telemetry = telemetry
        self.log = logger or logging.getLogger(f"tracepipe.receiver.{receiver_id}")
        self.handler = ExportHandler(receiver_id, cfg, transport, telemetry, self.log)
        self.max_body_bytes = cfg.http.max_body_bytes
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """HOST:PORT this receiver listens on (after start; the bound port when 0 was asked)."""
        assert self.cfg.http is not None
        return f"{parse_endpoint(self.cfg.http.endpoint)[0]}:{self._port}"

    def app(self) -> web.Application:
        middlewares = [auth_middleware(self.auth, ingest_scope, self._refuse)] if self.auth.enabled else []
        app = web.Application(middlewares=middlewares)
        app.router.add_post(PATH, self._traces)
        from pipeline.receivers.otlp_signals_http import add_signal_routes  # /v1/logs, /v1/metrics

        add_signal_routes(app, self)
        return app

    def _refuse(self, failure: Failure, request: web.Request) -> web.Response:
        """401/403 as google.rpc.Status in the request's encoding, with WWW-Authenticate."""
        if request.content_type not in (PROTOBUF, JSON):
            return refusal(failure)
        resp = self._error(failure.status, failure.message, request.content_type == JSON)
        resp.headers["WWW-Authenticate"] = refusal(failure).headers["WWW-Authenticate"]
        return resp

    async def start(self) -> None:
        assert self.cfg.http is not None
        endpoint = self.cfg.http.endpoint
        host, port = parse_endpoint(endpoint)
        quiet_client_errors()  # client-side HTTP errors: one DEBUG line, not a traceback
        # auto_decompress off: gzip is inflated here, incrementally and capped
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, auto_decompress=False)
        await runner.setup()
        tls = self.cfg.http.tls
        ssl_context = None
        if tls is not None:
            from pipeline.auth.tls import server_ssl_context

            ssl_context = server_ssl_context(tls)
        from pipeline.receivers.http2_guard import guarded_site  # one warning per gRPC client address

        site = guarded_site(runner, host, port, self, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise OSError(
                f"receivers.{self.receiver_id}.http: cannot listen on {endpoint}: {e.strerror or e}"
            ) from None
        sockets = getattr(site._server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else port
        self._runner = runner
        self.log.info("OTLP/HTTP receiver %s listening on %s (port %d%s%s)", self.receiver_id, endpoint, self._port,
                      ", TLS" if tls else "", ", auth" if self.auth.enabled else "")

    async def stop(self, grace: float = 5.0) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            if hasattr(runner, "_shutdown_timeout"):  # aiohttp takes it only in the constructor
                runner._shutdown_timeout = grace
            await runner.cleanup()

    # --- request handling --------------------------------------------------------------

    def _count(self, code: str) -> None:
        self.telemetry.receiver_requests.labels(self.receiver_id, code).inc()

    def _error(self, status: int, message: str, as_json: bool, retry: bool = False) -> web.Response:
        self._count(str(status))
        body = status_pb2.Status(code=_RPC_CODE.get(status, code_pb2.UNKNOWN), message=message)
        headers = {}
        if retry:
            retry_after = self.cfg.retry_after
            body.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after)))
            headers["Retry-After"] = str(retry_after)
        return _reply(status, body, as_json, headers)

    async def read_request(
        self, request: web.Request, parse_pb: Callable[[bytes], Message], parse_json: Callable[[bytes], Message]
    ) -> tuple[Message, bytes, bool] | web.Response:
        """The decoded export request of any signal (message, body bytes, whether JSON), or the
        error answer: 415 for another Content-Type or Content-Encoding, 413 past the body limit
        (compressed or inflated), 400 for a corrupt, incomplete or malformed body."""
        ctype = request.content_type
        if ctype == PROTOBUF:
            as_json = False
        elif ctype == JSON:
            as_json = True
        else:
            return self._error(415, f"unsupported Content-Type {ctype[:100]!r}; use {PROTOBUF} or {JSON}", True)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in _WBITS and encoding not in ("identity", ""):
            return self._error(
                415, f"unsupported Content-Encoding {encoding[:50]!r}; use gzip, deflate or identity", as_json
            )
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._error(
                413, f"body of {request.content_length} bytes exceeds the limit of {limit} bytes", as_json
            )
        try:
            body = await _read_body(request, limit, _WBITS.get(encoding))
        except _TooLarge as e:
            return self._error(413, str(e), as_json)
        except OtlpDecodeError as e:
            return self._error(400, e.message, as_json)
        except (ConnectionResetError, ClientPayloadError) as e:  # the client went away or sent a broken body
            self.log.debug("receiver %s: incomplete request body: %s", self.receiver_id, type(e).__name__)
            return self._error(400, "incomplete request body", as_json)
        try:
            if not as_json:
                message = parse_pb(body)  # upb: ~1.4 M spans/s, fine on the loop
            elif len(body) > _JSON_INLINE_BYTES:  # large JSON takes a while: keep the loop responsive
                message = await asyncio.to_thread(parse_json, body)
            else:
                message = parse_json(body)
        except OtlpDecodeError as e:
            return self._error(400, e.message, as_json)
        except (DecodeError, UnicodeDecodeError) as e:
            return self._error(400, f"malformed OTLP protobuf: {e}", as_json)
        return message, body, as_json

    def answer(self, outcome: Outcome, partial: bool, response: Message, message: str, as_json: bool) -> web.Response:
        """The HTTP answer to an export's outcome (any signal)."""
        if outcome is Outcome.ACCEPTED:
            self._count("partial" if partial else "ok")
            return _reply(200, response, as_json)
        return self._error(_HTTP_STATUS[outcome], message, as_json, retry=outcome is not Outcome.TOO_LARGE)

    async def _traces(self, request: web.Request) -> web.Response:
        read = await self.read_request(request, decode_protobuf, parse_json_request)
        if isinstance(read, web.Response):
            return read
        req, body, as_json = read
        result = await self.handler.export(req, request.get(PRINCIPAL_KEY, ANONYMOUS),
                                           None if as_json else body, len(body))
        return self.answer(result.outcome, result.partial, result.response, result.message, as_json)


def _reply(status: int, message: Message, as_json: bool, headers: dict[str, str] | None = None) -> web.Response:
    if as_json:
        return web.Response(status=status, body=response_to_json(message), content_type=JSON, headers=headers)
    return web.Response(status=status, body=message.SerializeToString(), content_type=PROTOBUF, headers=headers)


async def _read_body(request: web.Request, limit: int, wbits: int | None) -> bytes:
    """The request body, inflated when `wbits` is given (gzip or zlib); raises _TooLarge as
    soon as either the received or the inflated size exceeds `limit`, OtlpDecodeError for a
    corrupt compressed body."""
    out = bytearray()
    received = 0
    inflater = zlib.decompressobj(wbits) if wbits is not None else None
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise _TooLarge(f"body exceeds the limit of {limit} bytes")
            if inflater is None:
                out += chunk
                continue
            data = chunk
            while data:
                if inflater.eof:  # a previous gzip member ended with the previous chunk
                    inflater = zlib.decompressobj(wbits)
                out += inflater.decompress(data, limit - len(out) + 1)
                if len(out) > limit:
                    raise _TooLarge(f"body exceeds the limit of {limit} bytes after decompression")
                data = inflater.unconsumed_tail
                if inflater.eof and inflater.unused_data:  # concatenated gzip members (RFC 1952)
                    data = inflater.unused_data
                    inflater = zlib.decompressobj(wbits)
    except zlib.error as e:
        raise OtlpDecodeError(f"invalid compressed body: {e}") from None
    if inflater is not None and not inflater.eof and (received or out):
        raise OtlpDecodeError("invalid compressed body: truncated")
    return bytes(out)
