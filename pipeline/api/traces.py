"""GET /api/traces/{trace_id} (one trace: spans, tree, totals) and GET /api/traces (summaries).

List parameters: service, model, user, session (session.id or gen_ai.conversation.id),
status (ok|error|unset), min_cost (USD), since (15m, 24h, 7d), limit (1..1000, default 20),
cursor (the `next` of the previous page), tenant (admin only: one tenant's traces; a read token
always gets its own).
Bad parameters answer 400 with a message naming the parameter (pipeline/api/params.py); an unknown trace 404; a
process without a query store 503. Both are limited to the caller's tenant (admin: every tenant);
a trace of another tenant answers 404, as an unknown one does (never 403: that would confirm it exists).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.exceptions import OperationalError

from pipeline.api import CONTEXT_KEY, json_error, params
from pipeline.api.scoping import forbidden, narrowed_tenant, tenant_filter
from pipeline.query.store import StoreLockedError, StoreMissingError
from pipeline.query.traces import MAX_LIMIT, TRACE_STATUSES, normalize_trace_id

log = logging.getLogger("tracepipe.api")

_LIST_PARAMS = {"service", "model", "user", "session", "status", "min_cost", "since", "limit", "cursor"}


def queries_or_error(request: web.Request) -> tuple[Any, web.Response | None]:
    queries = request.app[CONTEXT_KEY].queries
    if queries is None:
        return None, json_error(503, "no trace store in this process (no clickhouse sink configured)")
    return queries, None


async def run_query(coro: Any) -> tuple[Any, web.Response | None]:
    """Await a query; map its failures onto JSON errors (400 bad input, 503 store unavailable)."""
    try:
        return await coro, None
    except (StoreLockedError, StoreMissingError) as e:
        return None, json_error(503, str(e))
    except OperationalError as e:
        return None, json_error(503, f"the trace store is unreachable: {type(e).__name__}")
    except ValueError as e:
        return None, json_error(400, str(e))
    except Exception as e:
        log.exception("query failed")
        return None, json_error(500, f"query failed: {type(e).__name__}")


async def get_trace(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    try:
        tid = normalize_trace_id(request.match_info["trace_id"])
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    trace, err = await run_query(queries.get_trace(tid, tenant=tenant_filter(request)))
    if err is not None:
        return err
    if trace is None:
        return json_error(404, f"trace {tid} not found")
    return web.json_response(trace)


def parse_list_params(q: Any) -> dict[str, Any]:
    """Validated keyword arguments for TraceQueries.list_traces; ValueError names the bad parameter."""
    params.check_known(q, _LIST_PARAMS)
    kwargs: dict[str, Any] = {}
    for key in ("service", "model", "user", "session"):
        value = params.text(q, key)
        if value is not None:
            kwargs[key] = value
    values = {
        "cursor": params.cursor(q),
        "status": params.choice(q, "status", TRACE_STATUSES),
        "min_cost": params.finite_float(q, "min_cost", None, 0.0, 1e12),
        "since": params.duration(q, "since"),
        "limit": params.integer(q, "limit", None, 1, MAX_LIMIT),
    }
    kwargs.update({k: v for k, v in values.items() if v is not None})
    return kwargs


async def list_traces(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    try:
        params.text(request.query, "tenant")
        kwargs = parse_list_params({k: v for k, v in request.query.items() if k != "tenant"})
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(queries.list_traces(**kwargs, tenant=narrowed_tenant(request)))
    if err is not None:
        return err
    return web.json_response(result)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/traces", list_traces), web.get("/api/traces/{trace_id}", get_trace)]
