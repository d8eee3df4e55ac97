"""The aiohttp side of auth: a middleware putting the caller's Principal at request["principal"].

Missing or invalid token: 401 with `WWW-Authenticate: Bearer`; a token without the scope
the route needs: 403. `scope_of(request)` names the scope a request needs, or None for an
open path (/healthz, /readyz, the static UI under /ui), which still gets a Principal (UNAUTHENTICATED unless a
valid token came along).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pipeline.auth.guard import ListenerAuth
from pipeline.auth.tokens import Failure

PRINCIPAL_KEY = "principal"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# The web UI's static page and scripts (pipeline/api/ui.py): no data, so no token; the data it
# shows comes through /api/ with the user's token.
OPEN_PREFIXES = ("/ui/",)
OPEN_UI = "/ui"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ScopeOf = Callable[[web.Request], str | None]


def api_scope(request: web.Request) -> str | None:
    """Query API: health probes open, DELETE needs admin, POST /api/scores ingest (scores are data
    applications send in, like spans), everything else read."""
    if request.path in OPEN_PATHS or request.path == OPEN_UI or request.path.startswith(OPEN_PREFIXES):
        return None
    if request.method == "POST" and request.path == "/api/scores":
        return "ingest"
    return "admin" if request.method == "DELETE" else "read"


def metrics_scope(request: web.Request) -> str | None:
    return "read"


def ingest_scope(request: web.Request) -> str | None:
    return "ingest"


def refusal(failure: Failure, as_json: bool = True) -> web.Response:
    headers = {}
    if failure.status == 401:
        error = "invalid_token" if failure.reason == "invalid" else "invalid_request"
        headers["WWW-Authenticate"] = 'Bearer realm="tracepipe"' + (
            f', error="{error}"' if failure.reason != "missing" else "")
    else:
        headers["WWW-Authenticate"] = 'Bearer realm="tracepipe", error="insufficient_scope"'
    return web.json_response({"error": failure.message}, status=failure.status, headers=headers)


def auth_middleware(auth: ListenerAuth, scope_of: ScopeOf,
                    refuse: Callable[[Failure, web.Request], web.StreamResponse] | None = None
                    ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware for `auth`; `refuse` builds the refusal (default: JSON error)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        scope = scope_of(request)
        header = request.headers.get("Authorization")
        if scope is None:
            request[PRINCIPAL_KEY] = auth.identify(header)
            return await handler(request)
        result = auth.check(header, scope)
        if isinstance(result, Failure):
            return refuse(result, request) if refuse is not None else refusal(result)
        request[PRINCIPAL_KEY] = result
        return await handler(request)

    return middleware
