"""GET /api/alerts: active alerts (default) or recent alert events.

Query: `state=active|all` (all = recent firing and resolved events, newest first),
`limit` (default 100, at most 1000). Reads `ApiContext.extras["alerts"]`, the
`pipeline.alerts.AlertStore` the runtime's alert router fills.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error, params

MAX_LIMIT = 1000


async def list_alerts(request: web.Request) -> web.Response:
    store = request.app[CONTEXT_KEY].extras.get("alerts")
    if store is None:
        return json_error(404, "the alert path is not enabled in this process")
    try:
        state = params.choice(request.query, "state", ("active", "all"), "active")
        limit = params.integer(request.query, "limit", 100, 1, MAX_LIMIT)
    except ValueError as e:
        return json_error(400, str(e))
    assert limit is not None
    active = store.active()
    alerts = active[:limit] if state == "active" else store.recent(limit)
    return web.json_response({"state": state, "active_count": len(active), "alerts": alerts})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/alerts", list_alerts)]
