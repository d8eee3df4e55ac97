"""The HTTP query API (aiohttp): traces, analytics, health, and what other areas add.

Each area has a module here exposing `routes() -> list[web.RouteDef]`; handlers find
what they need in the app through the typed keys below. The same app serves the
embedded pipeline and both distributed roles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pipeline.services import Services
from pipeline.telemetry import Telemetry


@dataclass
class ApiContext:
    """What API handlers may use. Fields are None when this process does not have them."""

    telemetry: Telemetry
    queries: Any = None  # pipeline.query.traces.TraceQueries
    # name -> callable returning (ok, detail); /healthz uses `liveness`, /readyz `readiness`.
    liveness: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)
    readiness: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)
    services: Services = field(default_factory=Services)  # budgets, alerts, audit, dead letters


CONTEXT_KEY: web.AppKey[ApiContext] = web.AppKey("tracepipe_api_context", ApiContext)


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(ctx: ApiContext) -> web.Application:
    from pipeline.api import health
    from pipeline.api.audit import audit_middleware

    app = web.Application(middlewares=[audit_middleware])  # outermost: the auth middleware is added inside
    app[CONTEXT_KEY] = ctx
    route_modules = [health]
    for module_name in _OPTIONAL_ROUTE_MODULES:
        try:
            module = __import__(f"pipeline.api.{module_name}", fromlist=["routes"])
        except ModuleNotFoundError as e:
            if e.name == f"pipeline.api.{module_name}":
                continue
            raise
        route_modules.append(module)
    for module in route_modules:
        app.add_routes(module.routes())
    return app


# Route modules registered here: one line per area.
_OPTIONAL_ROUTE_MODULES: list[str] = [
    "traces",
    "deletion",
    "audit",
    "analytics",
    "budgets",
    "alerts",
    "dead_letters",
    "sessions",
    "spend",
    "ui",
    "scores",
    "replay",
]
