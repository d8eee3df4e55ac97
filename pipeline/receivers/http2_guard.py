"""A clear answer for gRPC clients that talk to the OTLP/HTTP port.

An OTLP/gRPC exporter pointed at :4318 (the SDKs' gRPC default with the HTTP port in
OTEL_EXPORTER_OTLP_ENDPOINT) opens the connection with the HTTP/2 prior-knowledge preface
`PRI * HTTP/2.0`. aiohttp would log a full "Pause on PRI/Upgrade" traceback for each of
the client's retries. Instead, the receiver's site sniffs the first bytes of a connection:
on the preface it answers in HTTP/2 (an empty SETTINGS frame, then GOAWAY with error
HTTP_1_1_REQUIRED and a debug message naming the gRPC endpoint, which gRPC clients show in
their error), closes the connection, counts it in
`tracepipe_receiver_wrong_protocol_connections_total{receiver,protocol="http2_prior_knowledge"}`
and logs ONE warning per client address. The addresses already warned about are kept in a
bounded LRU (`MAX_ADDRESSES`); an address evicted from it may be warned about once more.
Every other connection goes to aiohttp untouched.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from typing import Any

from aiohttp import web

PREFACE = b"PRI * HTTP/2.0"
MAX_ADDRESSES = 4096
_HTTP_1_1_REQUIRED = 0xD


def goaway_frames(debug: bytes) -> bytes:
    """An empty SETTINGS frame (the server preface) and GOAWAY(HTTP_1_1_REQUIRED, debug)."""
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    payload = struct.pack(">II", 0, _HTTP_1_1_REQUIRED) + debug
    header = struct.pack(">I", len(payload))[1:] + b"\x07\x00" + struct.pack(">I", 0)
    return settings + header + payload


class Http2Guard:
    """The per-receiver state: which addresses were warned about, and the message."""

    def __init__(self, receiver: Any, logger: logging.Logger, max_addresses: int = MAX_ADDRESSES) -> None:
        self.receiver_id: str = receiver.receiver_id
        grpc_cfg = getattr(receiver.cfg, "grpc", None)
        self.grpc_endpoint: str | None = grpc_cfg.endpoint if grpc_cfg is not None else None
        self.log = logger
        self.telemetry = receiver.telemetry
        self.max_addresses = max_addresses
        self._warned: OrderedDict[str, None] = OrderedDict()
        where = f"OTLP/gRPC listens on {self.grpc_endpoint}" if self.grpc_endpoint else "OTLP/gRPC is disabled"
        self.hint = (
            f"this is tracepipe's OTLP/HTTP port: {where}; "
            "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf to use this port"
        )

    def reject(self, peer: Any) -> None:
        self.telemetry.receiver_wrong_protocol_connections.labels(self.receiver_id, "http2_prior_knowledge").inc()
        addr = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        if addr in self._warned:
            self._warned.move_to_end(addr)
            return
        self._warned[addr] = None
        if len(self._warned) > self.max_addresses:
            self._warned.popitem(last=False)
        self.log.warning(
            "receiver %s: a gRPC (HTTP/2) client at %s connected to the OTLP/HTTP port; %s "
            "(further connections from this address are not logged)",
            self.receiver_id,
            addr,
            self.hint,
        )


class _SniffingProtocol(asyncio.Protocol):
    """Holds the first bytes until they tell HTTP/1.x from the HTTP/2 preface."""

    def __init__(self, inner: Any, guard: Http2Guard) -> None:
        self._inner = inner
        self._guard = guard
        self._buf = b""
        self._decided = False
        self._transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._decided:
            self._inner.data_received(data)
            return
        buf = self._buf + data
        if len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            self._buf = buf  # could still be the preface
            return
        self._decided = True
        self._buf = b""
        if buf.startswith(PREFACE):
            self._guard.reject(self._transport.get_extra_info("peername"))
            try:
                self._transport.write(goaway_frames(self._guard.hint.encode()))
            finally:
                self._transport.close()
            return
        self._inner.data_received(buf)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedTCPSite(web.TCPSite):
    """web.TCPSite whose connections pass through `_SniffingProtocol` first."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: Http2Guard, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        self._server = await loop.create_server(
            lambda: _SniffingProtocol(server(), guard),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port


def guarded_site(runner: web.BaseRunner, host: str, port: int, receiver: Any, **kwargs: Any) -> web.TCPSite:
    """The OTLP/HTTP receiver's site: a TCPSite that answers gRPC clients clearly (module doc)."""
    return GuardedTCPSite(runner, host, port, Http2Guard(receiver, receiver.log), **kwargs)
