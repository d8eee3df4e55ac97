"""GET /api/alerts: active alerts (default) or recent alert events.

Query: `state=active|all` (all = recent firing and resolved events, newest first),
`limit` (default 100, at most 1000). Reads `ApiContext.extras["alerts"]`, the
`pipeline.alerts.AlertStore` the runtime's alert router fills.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error

MAX_LIMIT = 1000


async def list_alerts(request: web.Request) -> web.Response:
    store = request.app[CONTEXT_KEY].extras.get("alerts")
    if store is None:
        return json_error(404, "the alert path is not enabled in this process")
    state = request.query.get("state", "active")
    if state not in ("active", "all"):
        return json_error(400, "state must be 'active' or 'all'")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return json_error(400, "limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return json_error(400, f"limit must be between 1 and {MAX_LIMIT}")
    active = store.active()
    alerts = active[:limit] if state == "active" else store.recent(limit)
    return web.json_response({"state": state, "active_count": len(active), "alerts": alerts})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/alerts", list_alerts)]
