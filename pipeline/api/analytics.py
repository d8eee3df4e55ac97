"""GET /api/analytics/cost?by=DIMENSION&since=24h

Spend, tokens, calls and p50/p95 latency per group, most expensive first (JSON list).
`by` (default model): model (the request model, else the response model: the model
identity), response_model (the billed, dated name), service, operation, provider, session
(session.id, else gen_ai.conversation.id) and customer (customer.id) group the LLM span
rows; user, feature and tenant use trace-level attribution (the value set anywhere in a
trace owns its cost; p50/p95 are then trace durations). `since` defaults to 24h. Limited to the caller's tenant
(admin: every tenant, or the one `tenant` names).
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import json_error, params
from pipeline.api.scoping import forbidden, narrowed_tenant
from pipeline.api.traces import queries_or_error, run_query
from pipeline.query.traces import COST_DIMENSIONS


async def cost(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    q = request.query
    try:
        params.check_known(q, {"by", "since", "tenant"})
        params.text(q, "tenant")
        by = params.choice(q, "by", COST_DIMENSIONS, "model")
        since = params.duration(q, "since", "24h")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    rows, err = await run_query(queries.cost_by(by, since=since, tenant=narrowed_tenant(request)))
    if err is not None:
        return err
    return web.json_response(rows)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/analytics/cost", cost)]
