"""GET /api/sessions, GET /api/sessions/{id} (a conversation's turns) and GET /api/users/{id}.

- `/api/sessions?user=&since=7d&limit=20`: sessions (session.id, else
  gen_ai.conversation.id) by last activity, newest first, with turns, cost, tokens, calls,
  errors and users.
- `/api/sessions/{id}`: the turns in order, each with its trace id, start, latency, cost,
  tokens, calls and errors, plus totals; 404 when no span carries the id.
- `/api/users/{id}?since=30d&interval=day|hour&limit=20`: the user's totals, spend per
  interval and most recent traces; 404 when the user has no trace in the window.

Bad parameters answer 400 naming the parameter; a process without a query store 503. Every
answer is limited to the caller's tenant (admin: every tenant); another tenant's session or
user answers 404 like an unknown one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.api import json_error, params
from pipeline.api.scoping import forbidden, tenant_filter
from pipeline.api.traces import queries_or_error, run_query
from pipeline.query import sessions as sq


def _params(q: Any, allowed: set[str]) -> dict[str, Any]:
    """Validated keyword arguments (pipeline/api/params.py bounds); ValueError names the parameter."""
    params.check_known(q, allowed)
    values = {
        "user": params.text(q, "user") if "user" in allowed else None,
        "since": params.duration(q, "since") if "since" in allowed else None,
        "interval": params.choice(q, "interval", sq.INTERVALS) if "interval" in allowed else None,
        "limit": params.integer(q, "limit", None, 1, sq.MAX_LIMIT) if "limit" in allowed else None,
    }
    return {k: v for k, v in values.items() if v is not None}


async def list_sessions(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    try:
        kwargs = _params(request.query, {"user", "since", "limit"})
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.list_sessions(queries, **kwargs, tenant=tenant_filter(request)))
    return err if err is not None else web.json_response(result)


async def get_session(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    sid = request.match_info["session_id"]
    try:
        params.check_known(request.query, set())
        if len(sid) > params.MAX_TEXT_CHARS:
            raise params.ParamError(f"session id: at most {params.MAX_TEXT_CHARS} characters")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.get_session(queries, sid, tenant=tenant_filter(request)))
    if err is not None:
        return err
    if result is None:  # another tenant's session answers as an unknown one
        return json_error(404, f"session {sid} not found")
    return web.json_response(result)


async def get_user(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    uid = request.match_info["user_id"]
    try:
        kwargs = _params(request.query, {"since", "interval", "limit"})
        if len(uid) > params.MAX_TEXT_CHARS:
            raise params.ParamError(f"user id: at most {params.MAX_TEXT_CHARS} characters")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.get_user(queries, uid, **kwargs, tenant=tenant_filter(request)))
    if err is not None:
        return err
    if result is None:
        return json_error(404, f"user {uid} has no traces in the window")
    return web.json_response(result)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/sessions", list_sessions),
        web.get("/api/sessions/{session_id}", get_session),
        web.get("/api/users/{user_id}", get_user),
    ]
