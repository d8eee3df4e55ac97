"""Small aiohttp server helpers shared by the runtimes: the query API and /metrics."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pipeline.client_errors import quiet_client_errors
from pipeline.config import ServiceConfig, parse_endpoint
from pipeline.telemetry import Telemetry


class RunningServer:
    """An aiohttp app listening on one endpoint; `port` is the bound port (0 works)."""

    def __init__(self, app: web.Application, endpoint: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.endpoint = endpoint
        self.ssl_context = ssl_context
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0
        self.host = ""

    async def start(self) -> None:
        quiet_client_errors()  # client-side HTTP errors: one DEBUG line, not a traceback
        host, port = parse_endpoint(self.endpoint)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            raise OSError(f"cannot listen on {self.endpoint}: {e.strerror or e}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        await self.runner.cleanup()


def metrics_app(telemetry: Telemetry) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = telemetry.exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_service_servers(service: ServiceConfig, api_ctx: Any, telemetry: Telemetry,
                                servers: list[RunningServer],
                                auth_for: Callable[[str, Any], Any] | None = None) -> dict[str, str]:
    """Start the query API and /metrics servers that `service` asks for (an endpoint may be
    off), appending each to `servers` as soon as it runs, so the caller's stop() stops what
    did start; returns where they listen: {"api": "host:port", "metrics": "host:port"}.
    `auth_for(listener, server_config)` gives each its ListenerAuth (pipeline.auth.setup);
    without it both run as ANONYMOUS. Each server's `tls` is served with reloading certificates."""
    from pipeline.api import build_app
    from pipeline.auth.guard import ListenerAuth
    from pipeline.auth.http import api_scope, auth_middleware, metrics_scope

    where: dict[str, str] = {}
    for kind, cfg, make, scope in (("api", service.api, lambda: build_app(api_ctx), api_scope),
                                   ("metrics", service.metrics, lambda: metrics_app(telemetry), metrics_scope)):
        if cfg.endpoint:
            app = make()
            auth = auth_for(kind, cfg) if auth_for is not None else ListenerAuth(kind, None, telemetry)
            app.middlewares.append(auth_middleware(auth, scope))
            ssl_context = None
            if cfg.tls is not None:
                from pipeline.auth.tls import server_ssl_context

                ssl_context = server_ssl_context(cfg.tls)
            server = RunningServer(app, cfg.endpoint, ssl_context)
            await server.start()
            servers.append(server)
            where[kind] = f"{server.host}:{server.port}"
    return where
