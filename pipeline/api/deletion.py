"""DELETE /api/users/{id}, /api/traces/{trace_id}, /api/tenants/{id} (admin scope): forget them.

Removes the rows everywhere this process stores them (see pipeline/deletion.py: spans and trace
summaries, budget counters, alerts, registered stores) and answers the counts per store:

    {"kind": "user", "id": "u-42", "tenant": null,
     "removed": {"clickhouse": {"spans": 12, "trace_summaries": 3}, "budgets": {"counters": 2},
                 "alerts": {"events": 0}},
     "errors": {}}

`?tenant=T` limits a user or trace deletion to tenant T (user ids are per tenant). 200 when every
store answered (also when nothing matched), 500 with the partial counts and `errors` otherwise.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error
from pipeline.api.scoping import forbidden, tenant_filter
from pipeline.deletion import ForgetRequest, build_forgetter


async def _forget(request: web.Request, kind: str, value: str) -> web.Response:
    if (denied := forbidden(request, "admin")) is not None:
        return denied
    unknown = sorted(set(request.query) - {"tenant"})
    if unknown:
        return json_error(400, f"{unknown[0]}: unknown parameter (allowed: tenant)")
    # An admin sees every tenant: ?tenant= narrows; tenant_filter keeps a non-admin principal
    # with admin scope (should one exist) inside its own tenant.
    tenant = tenant_filter(request) or request.query.get("tenant") or None
    if kind == "tenant" and tenant is not None and tenant != value:
        return json_error(403, "a token limited to one tenant cannot forget another")
    try:
        req = ForgetRequest(kind, value, None if kind == "tenant" else tenant)  # type: ignore[arg-type]
    except ValueError as e:
        return json_error(400, str(e))
    ctx = request.app[CONTEXT_KEY]
    result = await build_forgetter(ctx.queries, ctx.services).forget(req)
    return web.json_response(result.to_json(), status=200 if result.ok else 500)


async def forget_user(request: web.Request) -> web.Response:
    return await _forget(request, "user", request.match_info["id"])


async def forget_trace(request: web.Request) -> web.Response:
    return await _forget(request, "trace", request.match_info["trace_id"])


async def forget_tenant(request: web.Request) -> web.Response:
    return await _forget(request, "tenant", request.match_info["id"])


def routes() -> list[web.RouteDef]:
    return [
        web.delete("/api/users/{id}", forget_user),
        web.delete("/api/traces/{trace_id}", forget_trace),
        web.delete("/api/tenants/{id}", forget_tenant),
    ]
