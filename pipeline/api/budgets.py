"""GET /api/budgets and GET /api/budgets/{scope}/{id}: where an id stands in its budgets.

`scope` is a budget scope (user, tenant, customer, session, feature, model, response_model,
provider, service, a combination such as customer+feature in any order, or global); `id` the id, with the
parts of a combined scope joined by '/' in the order of `scope` (acme/chat). `?tier=`
resolves the limit of an id that has not spent anything yet. The answer lists every
budget of that scope with its current period: spent, limit, remaining, reset time.

GET /api/budgets/check?user=u-42&feature=chat&tier=free[&estimated_usd=0.01] answers the
guard's decision (200, or 429 with Retry-After): BudgetGuard(api_url=...) uses it where
counters live in the embedded pipeline's local store instead of Redis.

Counters are per tracepipe tenant: a token reads its own tenant's counters; an admin token (and
callers of a listener without auth: tenant "default") may name another with `?as_tenant=T`.

The handlers use `ApiContext.services.budgets`, a `pipeline.budgets.registry.BudgetRegistry`.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error, params
from pipeline.api.scoping import acting_tenant, forbidden
from pipeline.budgets.config import parse_scope, scope_name
from pipeline.budgets.store import StoreUnavailable


def _registry(request: web.Request):  # type: ignore[no-untyped-def]
    return request.app[CONTEXT_KEY].services.budgets


async def list_budgets(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    registry = _registry(request)
    if registry is None:
        return json_error(404, "no budgets sink is configured")
    return web.json_response({"budgets": registry.definitions()})


async def show_budget(request: web.Request) -> web.Response:
    if (denied := forbidden(request, "read")) is not None:
        return denied
    tenant, denied = acting_tenant(request)
    if denied is not None:
        return denied
    registry = _registry(request)
    if registry is None:
        return json_error(404, "no budgets sink is configured")
    scope, id_ = request.match_info["scope"], request.match_info["id"]
    try:
        if len(scope) > params.MAX_TEXT_CHARS or len(id_) > params.MAX_TEXT_CHARS:
            raise params.ParamError(f"scope and id: at most {params.MAX_TEXT_CHARS} characters each")
        canonical = scope_name(parse_scope(scope))
        statuses = await registry.status(scope, id_, tier=params.text(request.query, "tier"), tenant=tenant)
    except ValueError as e:
        return json_error(400, str(e))
    except StoreUnavailable as e:
        return json_error(503, f"budget store unavailable: {e}")
    if not statuses:
        return json_error(404, f"no budget has scope {canonical}")
    return web.json_response({"scope": canonical, "id": id_, "budgets": [s.to_json() for s in statuses]})


async def check_budget(request: web.Request) -> web.Response:
    """The guard's decision for the scope values in the query (the guard's `api_url` mode):
    200 when allowed, 429 with Retry-After when a budget is spent."""
    if (denied := forbidden(request, "read")) is not None:
        return denied
    tenant, denied = acting_tenant(request)
    if denied is not None:
        return denied
    registry = _registry(request)
    if registry is None:
        return json_error(404, "no budgets sink is configured")
    from pipeline.budgets.guard import scope_values

    q = request.query
    scope = {k: v for k, v in q.items() if k not in ("tier", "estimated_usd", "estimated_tokens", "as_tenant")}
    try:
        for key in scope:
            params.text(q, key)
        tier = params.text(q, "tier")
        values = scope_values(scope)
        estimated_usd = params.finite_float(q, "estimated_usd", 0.0, 0.0, 1e9)
        estimated_tokens = params.integer(q, "estimated_tokens", 0, 0, 10**15)
    except (TypeError, ValueError) as e:
        return json_error(400, str(e).strip("'\""))
    try:
        decision = await registry.check(values, tier, estimated_usd or 0.0, estimated_tokens or 0, tenant)
    except StoreUnavailable as e:
        return json_error(503, f"budget store unavailable: {e}")
    return web.json_response(decision.to_json(), status=decision.status_code, headers=decision.headers())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/budgets", list_budgets),
        web.get("/api/budgets/check", check_budget),
        web.get("/api/budgets/{scope}/{id:.+}", show_budget),
    ]
