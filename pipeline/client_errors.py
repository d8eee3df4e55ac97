"""Quiet aiohttp about requests that are the client's fault.

aiohttp logs a full traceback at ERROR on its `aiohttp.server` logger for requests it has
already answered 400 itself (a malformed request line, header or chunk size, an over-long
header, non-HTTP bytes) and for a client that leaves mid-body. Bad input must not write
tracebacks: `quiet_client_errors()` (called when an aiohttp server starts; idempotent) turns
those records into one DEBUG line naming the problem, dropped unless logging is at debug.
Real handler errors keep their traceback.
"""

from __future__ import annotations

import logging

from aiohttp import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["ClientErrorFilter", "quiet_client_errors"]

_MAX_DETAIL_CHARS = 120


def _client_fault(exc: BaseException) -> bool:
    if isinstance(exc, HttpProcessingError):
        return int(getattr(exc, "code", 400) or 400) < 500
    return isinstance(exc, ConnectionResetError | ClientPayloadError)


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _client_fault(exc):
            return True
        text = str(getattr(exc, "message", None) or exc).strip().split("\n")[0]
        if len(text) > _MAX_DETAIL_CHARS:
            text = text[:_MAX_DETAIL_CHARS] + "..."
        record.msg = "bad request from a client: %s: %r"
        record.args = (type(exc).__name__, text)
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.DEBUG
        record.levelname = "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_client_errors() -> None:
    """Install the filter on aiohttp's server logger (once per process)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
