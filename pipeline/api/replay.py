"""Replay sets (pipeline/replay/): capture stored LLM calls, record a run's results, compare.

- `GET  /api/replay/sets`: the tenant's sets (name, items, filters, original cost, runs). `read`.
- `POST /api/replay/sets`: capture a set. Body: `name` and the filters `service`, `model`, `feature`,
  `since` (7d), `from` / `until` (ISO 8601), `score_below` (mean numeric score of the trace below
  this; `score_name` limits it to one score), `limit` (1-1000, default 100). Needs `read` (it
  reads the tenant's traces) and `ingest` (it stores data); 201 with the set's summary, 409 when the
  name is taken, 422 when nothing matches.
- `GET  /api/replay/sets/{name}`: the set with its items (input messages, original answer, model,
  tokens, cost, latency) and runs. `read`.
- `POST /api/replay/sets/{name}/results`: a run's results (pipeline/replay/results.py). `ingest`.
- `GET  /api/replay/sets/{name}/compare?run=RUN_ID`: per item and in total (default: the latest run). `read`.

A set belongs to one tenant: the caller's, or for an admin the one `?tenant=` names; a set of another
tenant answers 404, as an unknown one does. The pipeline never calls the model endpoint itself: the
client (`tracepipe replay run`) sends the requests with its own API key, records the replay spans through
the OTLP receiver and posts the results here.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pipeline.api import json_error, params
from pipeline.api.scoping import acting_tenant, forbidden
from pipeline.api.traces import queries_or_error, run_query
from pipeline.replay import store
from pipeline.replay.capture import check_name, validate_create
from pipeline.replay.results import RUN_ID_RE, validate_results
from pipeline.replay.sets import NothingCaptured, SetExists, UnknownRun, compare_set, create_set, record_results

MAX_CREATE_BODY = 16 * 1024
MAX_RESULTS_BODY = 64 * 1024 * 1024


async def _json_body(request: web.Request, limit: int) -> tuple[Any, web.Response | None]:
    if request.content_length is not None and request.content_length > limit:
        return None, json_error(413, f"body: at most {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        return None, json_error(413, f"body: at most {limit} bytes")
    try:
        return json.loads(raw), None
    except UnicodeDecodeError:
        return None, json_error(400, "body: not UTF-8")
    except json.JSONDecodeError as e:
        return None, json_error(400, f"body: not JSON ({e.msg})")


_STATUS_OF = {SetExists: 409, NothingCaptured: 422, UnknownRun: 404}


async def _run(coro: Any) -> tuple[Any, web.Response | None]:
    """run_query, with the replay errors answered by their own status."""

    async def mapped() -> tuple[Any, web.Response | None]:
        try:
            return await coro, None
        except (SetExists, NothingCaptured, UnknownRun) as e:
            return None, json_error(_STATUS_OF[type(e)], str(e))

    pair, err = await run_query(mapped())
    return (None, err) if err is not None else pair


def _guard(request: web.Request, *scopes: str, known: set[str] | None = None) -> tuple[str, Any, web.Response | None]:
    """(tenant, queries, error) shared by every handler."""
    for scope in scopes:
        if (denied := forbidden(request, scope)) is not None:
            return "", None, denied
    try:
        params.check_known(request.query, {"tenant"} | (known or set()))
        params.text(request.query, "tenant")
    except ValueError as e:
        return "", None, json_error(400, str(e))
    tenant, err = acting_tenant(request, "tenant")
    if err is not None:
        return "", None, err
    queries, err = queries_or_error(request)
    return tenant, queries, err


def _name(request: web.Request) -> tuple[str, web.Response | None]:
    try:
        return check_name(request.match_info["name"]), None
    except ValueError as e:
        return "", json_error(400, str(e))


async def list_sets(request: web.Request) -> web.Response:
    tenant, queries, err = _guard(request, "read")
    if err is not None:
        return err
    rows, err = await run_query(store.list_sets(queries, tenant))
    return err if err is not None else web.json_response(rows)


async def post_set(request: web.Request) -> web.Response:
    tenant, queries, err = _guard(request, "read", "ingest")
    if err is not None:
        return err
    body, err = await _json_body(request, MAX_CREATE_BODY)
    if err is not None:
        return err
    try:
        name, filters = validate_create(body)
    except ValueError as e:
        return json_error(400, str(e))
    created, err = await _run(create_set(queries, tenant, name, filters))
    if err is not None:
        return err
    return web.json_response(created | {"tenant": tenant}, status=201)


async def get_set(request: web.Request) -> web.Response:
    tenant, queries, err = _guard(request, "read")
    name, name_err = _name(request)
    if err is not None or name_err is not None:
        return err or name_err  # type: ignore[return-value]
    found, err = await run_query(store.get_set(queries, tenant, name))
    if err is not None:
        return err
    if found is None:
        return json_error(404, f"replay set {name} not found")
    return web.json_response(found)


async def post_results(request: web.Request) -> web.Response:
    tenant, queries, err = _guard(request, "ingest")
    name, name_err = _name(request)
    if err is not None or name_err is not None:
        return err or name_err  # type: ignore[return-value]
    body, err = await _json_body(request, MAX_RESULTS_BODY)
    if err is not None:
        return err
    items, err = await run_query(store.get_items(queries, tenant, name))
    if err is not None:
        return err
    if not items:
        return json_error(404, f"replay set {name} not found")
    try:
        run_id, results = validate_results(body, {it["item"] for it in items})
    except ValueError as e:
        return json_error(400, str(e))
    stored, err = await run_query(record_results(queries, tenant, name, run_id, results))
    if err is not None:
        return err
    return web.json_response({"set": name, "run_id": run_id, "stored": stored}, status=201)


async def get_compare(request: web.Request) -> web.Response:
    tenant, queries, err = _guard(request, "read", known={"run"})
    name, name_err = _name(request)
    if err is not None or name_err is not None:
        return err or name_err  # type: ignore[return-value]
    run_id = request.query.get("run") or None
    if run_id is not None and not RUN_ID_RE.match(run_id):
        return json_error(400, "run: expected 1-64 characters of letters, digits, _ -")
    result, err = await _run(compare_set(queries, tenant, name, run_id))
    if err is not None:
        return err
    if result is None:
        return json_error(404, f"replay set {name} not found")
    return web.json_response(result)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/replay/sets", list_sets),
        web.post("/api/replay/sets", post_set),
        web.get("/api/replay/sets/{name}", get_set),
        web.post("/api/replay/sets/{name}/results", post_results),
        web.get("/api/replay/sets/{name}/compare", get_compare),
    ]
