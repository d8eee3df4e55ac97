"""GET /api/analytics/spend?since=7d&interval=day: spend over time (the UI's cost-over-time chart).

The traces started in the window, per `interval` (hour|day, default day), with their cost, tokens,
LLM calls and errors, oldest bucket first, plus totals (pipeline/query/spend.py). `since` defaults
to 7d. Limited to the caller's tenant (admin: every tenant, or the one `tenant` names); bad
parameters answer 400 naming the parameter; a process without a query store 503.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import json_error, params
from pipeline.api.scoping import forbidden, narrowed_tenant
from pipeline.api.traces import queries_or_error, run_query
from pipeline.query.sessions import INTERVALS
from pipeline.query.spend import spend_over_time


async def spend(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    q = request.query
    try:
        params.check_known(q, {"since", "interval", "tenant"})
        params.text(q, "tenant")
        since = params.duration(q, "since", "7d")
        interval = params.choice(q, "interval", tuple(INTERVALS), "day")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(spend_over_time(queries, since=since, interval=interval or "day",
                                                  tenant=narrowed_tenant(request)))
    return err if err is not None else web.json_response(result)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/analytics/spend", spend)]
