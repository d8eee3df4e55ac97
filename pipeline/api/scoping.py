"""Who is asking, and what they may see: the caller's Principal and the scope checks of the API.

The auth middleware (pipeline/auth/) puts the caller's `Principal` at `request["principal"]`;
a listener without auth has none, and its callers are `ANONYMOUS` (admin, tenant "default").
Every GET needs the `read` scope and is limited to `principal.tenant_filter` (None for admin:
every tenant); DELETE endpoints and the audit log need `admin`.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.api import json_error
from pipeline.auth.principal import ANONYMOUS, Principal


def principal_of(request: web.Request) -> Principal:
    """The caller's Principal (ANONYMOUS on a listener without auth)."""
    principal = request.get("principal", ANONYMOUS)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def forbidden(request: web.Request, scope: str) -> web.Response | None:
    """A 403 response when the caller lacks `scope`, else None."""
    if principal_of(request).allows(scope):
        return None
    return json_error(403, f"this token lacks the {scope!r} scope")


def tenant_filter(request: web.Request) -> str | None:
    """The tenant the caller's queries are limited to (None: admin, every tenant)."""
    return principal_of(request).tenant_filter


def narrowed_tenant(request: web.Request) -> str | None:
    """`tenant_filter`, or for an admin the `?tenant=` it names (None: every tenant). A non-admin's
    `?tenant=` cannot widen or move its filter."""
    only = tenant_filter(request)
    return only if only is not None else (request.query.get("tenant") or None)


def acting_tenant(request: web.Request, param: str = "as_tenant") -> tuple[str, web.Response | None]:
    """The one tenant a per-tenant read (budgets) is about: the caller's own, or for an admin the
    `?as_tenant=` it names. A non-admin naming another tenant gets 403."""
    principal = principal_of(request)
    wanted = request.query.get(param) or None
    if wanted is None or wanted == principal.tenant:
        return principal.tenant, None
    if principal.is_admin:
        return wanted, None
    return principal.tenant, json_error(403, f"{param}: a non-admin token sees only its own tenant")
