"""POST /api/scores (store a score or feedback on a trace) and GET /api/quality (cost vs quality).

POST body (JSON, at most 16 KiB): `trace_id` (32 hex), optional `span_id` (16 hex), `name`,
`value` (number, boolean, or a category string), optional `comment`, `source` (api | user |
evaluator | quality; default api). Needs the `ingest` scope: scores are data applications send in,
with the same tokens they send spans with (a `read` token cannot write). The score is stored
under the token's tenant (never one the body names); the trace need not be stored yet (feedback
may arrive before its spans). Answers 201 with the stored score (its `id`), 400 naming the bad
field, 413 for an oversize body.

GET /api/quality?by=model|feature|prompt_version|service&name=SCORE&since=7d: per group, traces,
LLM calls, cost, cost per trace, scored traces and the mean numeric score (`name`: one score name;
default every numeric score). Needs `read`; limited to the caller's tenant (admin: every tenant,
or the one `tenant` names).
"""

from __future__ import annotations

import json

from aiohttp import web

from pipeline.api import json_error, params
from pipeline.api.scoping import forbidden, narrowed_tenant, principal_of
from pipeline.api.traces import queries_or_error, run_query
from pipeline.query.scores import QUALITY_DIMENSIONS, validate_score

MAX_BODY = 16 * 1024


async def post_score(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "ingest")) is not None:
        return denied
    if request.content_length is not None and request.content_length > MAX_BODY:
        return json_error(413, f"body: at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return json_error(413, f"body: at most {MAX_BODY} bytes")
    try:
        score = validate_score(json.loads(raw))
    except UnicodeDecodeError:
        return json_error(400, "body: not UTF-8")
    except json.JSONDecodeError as e:
        return json_error(400, f"body: not JSON ({e.msg})")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    stored, err = await run_query(queries.add_score(score, principal_of(request).tenant))
    if err is not None:
        return err
    return web.json_response(stored, status=201)


async def get_quality(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    q = request.query
    try:
        params.check_known(q, {"by", "name", "since", "tenant"})
        params.text(q, "tenant")
        by = params.choice(q, "by", QUALITY_DIMENSIONS, "model")
        name = params.text(q, "name")
        since = params.duration(q, "since", "7d")
    except ValueError as e:
        return json_error(400, str(e))
    queries, err = queries_or_error(request)
    if err is not None:
        return err
    rows, err = await run_query(queries.quality_by(by, name, since, tenant=narrowed_tenant(request)))
    if err is not None:
        return err
    return web.json_response(rows)


def routes() -> list[web.RouteDef]:
    return [web.post("/api/scores", post_score), web.get("/api/quality", get_quality)]
