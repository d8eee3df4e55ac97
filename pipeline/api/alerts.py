"""GET /api/alerts: active alerts (default) or recent alert events.

Query: `state=active|all` (all = recent firing and resolved events, newest first),
`limit` (default 100, at most 1000). Reads `ApiContext.services.alerts`, the
`pipeline.alerts.AlertStore` the runtime's alert router fills. A token sees the alerts of its own
tenant only (an event's `tenant`, "default" when it has none); admin sees every tenant's.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error, params
from pipeline.api.scoping import forbidden, tenant_filter
from pipeline.tenants import DEFAULT_TENANT

MAX_LIMIT = 1000


def _visible(events: list[dict], tenant: str | None) -> list[dict]:
    if tenant is None:
        return events
    return [e for e in events if (e.get("tenant") or DEFAULT_TENANT) == tenant]


async def list_alerts(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    only = tenant_filter(request)
    store = request.app[CONTEXT_KEY].services.alerts
    if store is None:
        return json_error(404, "the alert path is not enabled in this process")
    try:
        state = params.choice(request.query, "state", ("active", "all"), "active")
        limit = params.integer(request.query, "limit", 100, 1, MAX_LIMIT)
    except ValueError as e:
        return json_error(400, str(e))
    assert limit is not None
    active = _visible(store.active(), only)
    if state == "active":
        alerts = active[:limit]
    elif only is None:
        alerts = store.recent(limit)
    else:
        alerts = _visible(store.recent(10**9), only)[:limit]  # the history is bounded
    return web.json_response({"state": state, "active_count": len(active), "alerts": alerts})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/alerts", list_alerts)]
