"""Small aiohttp server helpers shared by the runtimes: the query API and /metrics."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.client_errors import quiet_client_errors
from pipeline.config import ServiceConfig, parse_endpoint
from pipeline.telemetry import Telemetry


class RunningServer:
    """An aiohttp app listening on one endpoint; `port` is the bound port (0 works)."""

    def __init__(self, app: web.Application, endpoint: str) -> None:
        self.app = app
        self.endpoint = endpoint
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = 0
        self.host = ""

    async def start(self) -> None:
        quiet_client_errors()  # client-side HTTP errors: one DEBUG line, not a traceback
        host, port = parse_endpoint(self.endpoint)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
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
                                servers: list[RunningServer]) -> dict[str, str]:
    """Start the query API and /metrics servers that `service` asks for (an endpoint may be
    off), appending each to `servers` as soon as it runs, so the caller's stop() stops what
    did start; returns where they listen: {"api": "host:port", "metrics": "host:port"}."""
    from pipeline.api import build_app

    where: dict[str, str] = {}
    for kind, endpoint, make in (("api", service.api.endpoint, lambda: build_app(api_ctx)),
                                 ("metrics", service.metrics.endpoint, lambda: metrics_app(telemetry))):
        if endpoint:
            server = RunningServer(make(), endpoint)
            await server.start()
            servers.append(server)
            where[kind] = f"{server.host}:{server.port}"
    return where

