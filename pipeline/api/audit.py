"""The audit trail of the API: a middleware recording every /api/ request, and GET /api/audit.

Every request under /api/ (reads and deletes alike, refused ones too) is written to the process's
`pipeline.audit.AuditLog` (`ApiContext.services.audit`) once its answer is known: the caller's
token id and tenant, the method, the route template (`/api/traces/{trace_id}`), its path
parameters, the query parameters and the status. /healthz and /readyz are not recorded.

GET /api/audit?since=24h&token=<token id>&tenant=<tenant>&limit=100 (admin scope): entries newest
first.

The audit middleware is the app's first (outermost) middleware: the auth middleware inside it sets
the caller's Principal on the request before the handler runs, and a request the auth middleware
refuses (401, or 403 for a token without the scope) is recorded too, with token id `refused`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error
from pipeline.api.scoping import forbidden, principal_of
from pipeline.query.traces import parse_since

MAX_LIMIT = 10_000
_PARAMS = {"since", "token", "tenant", "limit"}


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


@web.middleware
async def audit_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    log = request.app[CONTEXT_KEY].services.audit
    if log is None or not request.path.startswith("/api/"):
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        if request.get("principal") is None and status in (401, 403):
            token_id, tenant = "refused", "-"  # the auth middleware refused it before naming a principal
        else:
            principal = principal_of(request)
            token_id, tenant = principal.token_id, principal.tenant
        await log.record(
            token_id=token_id,
            tenant=tenant,
            method=request.method,
            route=_route(request),
            params=dict(request.match_info),
            query=dict(request.query),
            status=status,
        )


async def list_audit(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "admin")) is not None:
        return denied
    log = request.app[CONTEXT_KEY].services.audit
    if log is None:
        return json_error(404, "the audit log is disabled in this process (service.audit.enabled)")
    q = request.query
    unknown = sorted(set(q) - _PARAMS)
    if unknown:
        return json_error(400, f"{unknown[0]}: unknown parameter (allowed: {', '.join(sorted(_PARAMS))})")
    try:
        since_s = parse_since(q["since"]) / 1e9 if q.get("since") else None
        limit = int(q.get("limit", "100"))
    except ValueError as e:
        return json_error(400, str(e) if "since" in str(e) else "limit: must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return json_error(400, f"limit: must be between 1 and {MAX_LIMIT}")
    entries = await log.aquery(since_s=since_s, token=q.get("token") or None, tenant=q.get("tenant") or None,
                               limit=limit)
    return web.json_response({"entries": entries})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/audit", list_audit)]
