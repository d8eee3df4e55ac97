"""GET /api/traces/{trace_id} (one trace: spans, tree, totals) and GET /api/traces (summaries).

List parameters: service, model, user, session (session.id or gen_ai.conversation.id),
status (ok|error|unset), min_cost (USD), since (15m, 24h, 7d), limit (1..1000, default 20),
cursor (the `next` of the previous page).
Bad parameters answer 400 with a message naming the parameter; an unknown trace 404; a
process without a query store 503.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.exceptions import OperationalError

from pipeline.api import CONTEXT_KEY, json_error
from pipeline.query.store import StoreLockedError, StoreMissingError
from pipeline.query.traces import MAX_LIMIT, TRACE_STATUSES, normalize_trace_id, parse_since

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
    try:
        tid = normalize_trace_id(request.match_info["trace_id"])
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    trace, err = await run_query(queries.get_trace(tid))
    if err is not None:
        return err
    if trace is None:
        return json_error(404, f"trace {tid} not found")
    return web.json_response(trace)


def parse_list_params(q: Any) -> dict[str, Any]:
    """Validated keyword arguments for TraceQueries.list_traces; ValueError names the bad parameter."""
    unknown = sorted(set(q) - _LIST_PARAMS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter (allowed: {', '.join(sorted(_LIST_PARAMS))})")
    kwargs: dict[str, Any] = {}
    for key in ("service", "model", "user", "session", "cursor"):
        if q.get(key):
            kwargs[key] = q[key]
    if q.get("status"):
        status = q["status"].lower()
        if status not in TRACE_STATUSES:
            raise ValueError(f"status: must be one of {', '.join(TRACE_STATUSES)}")
        kwargs["status"] = status
    if q.get("min_cost"):
        try:
            min_cost = float(q["min_cost"])
        except ValueError:
            raise ValueError("min_cost: must be a number (USD)") from None
        if min_cost != min_cost or min_cost < 0:
            raise ValueError("min_cost: must be a number >= 0")
        kwargs["min_cost"] = min_cost
    if q.get("since"):
        parse_since(q["since"])
        kwargs["since"] = q["since"]
    if q.get("limit"):
        try:
            limit = int(q["limit"])
        except ValueError:
            raise ValueError("limit: must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}")
        kwargs["limit"] = limit
    return kwargs


async def list_traces(request: web.Request) -> web.Response:
    try:
        kwargs = parse_list_params(request.query)
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(queries.list_traces(**kwargs))
    if err is not None:
        return err
    return web.json_response(result)


def routes() -> list[web.RouteDef]:
    return [web.get("/api/traces", list_traces), web.get("/api/traces/{trace_id}", get_trace)]
