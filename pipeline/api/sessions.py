"""GET /api/sessions, GET /api/sessions/{id} (a conversation's turns) and GET /api/users/{id}.

- `/api/sessions?user=&since=7d&limit=20`: sessions (session.id, else
  gen_ai.conversation.id) by last activity, newest first, with turns, cost, tokens, calls,
  errors and users.
- `/api/sessions/{id}`: the turns in order, each with its trace id, start, latency, cost,
  tokens, calls and errors, plus totals; 404 when no span carries the id.
- `/api/users/{id}?since=30d&interval=day|hour&limit=20`: the user's totals, spend per
  interval and most recent traces; 404 when the user has no trace in the window.

Bad parameters answer 400 naming the parameter; a process without a query store 503.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.api import json_error
from pipeline.api.traces import queries_or_error, run_query
from pipeline.query import sessions as sq
from pipeline.query.traces import parse_since


def _params(q: Any, allowed: set[str]) -> dict[str, Any]:
    unknown = sorted(set(q) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter (allowed: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {}
    for key in allowed:
        value = q.get(key)
        if not value:
            continue
        if key == "since":
            parse_since(value)
        if key == "limit":
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError("limit: must be an integer") from None
            continue
        out[key] = value
    return out


async def list_sessions(request: web.Request) -> web.Response:
    try:
        kwargs = _params(request.query, {"user", "since", "limit"})
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.list_sessions(queries, **kwargs))
    return err if err is not None else web.json_response(result)


async def get_session(request: web.Request) -> web.Response:
    sid = request.match_info["session_id"]
    if request.query:
        return json_error(400, f"{sorted(request.query)[0]}: unknown parameter (none allowed)")
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.get_session(queries, sid))
    if err is not None:
        return err
    if result is None:
        return json_error(404, f"session {sid} not found")
    return web.json_response(result)


async def get_user(request: web.Request) -> web.Response:
    uid = request.match_info["user_id"]
    try:
        kwargs = _params(request.query, {"since", "interval", "limit"})
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    result, err = await run_query(sq.get_user(queries, uid, **kwargs))
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
