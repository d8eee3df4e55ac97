"""GET /ui: the web UI (a trace explorer) and its static files under /ui/static/.

The page and its scripts are static and carry no data, so they are served without a token (the
auth middleware treats /ui as an open path, like /healthz); every figure the page shows comes from
the JSON API, called by the page with the token the user pasted. Only files shipped in
pipeline/ui/static are served (no directory listing, no path outside it). Answers carry a strict
Content-Security-Policy (scripts and data from this origin only), `nosniff`, `no-referrer` and
deny framing.
"""

from __future__ import annotations

from aiohttp import web

from pipeline.ui import STATIC_DIR

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _shipped() -> dict[str, bytes | None]:
    """name -> None for every servable file (read on demand, so an upgrade shows without restart)."""
    return {p.name: None for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}


def _file_response(name: str) -> web.Response:
    if name not in _shipped():
        raise web.HTTPNotFound(text=f"no UI file {name!r}")
    path = STATIC_DIR / name
    return web.Response(body=path.read_bytes(), content_type=_TYPES[path.suffix], charset="utf-8",
                        headers=SECURITY_HEADERS)


async def index(request: web.Request) -> web.Response:
    return _file_response("index.html")


async def static_file(request: web.Request) -> web.Response:
    return _file_response(request.match_info["name"])


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ui", index),
        web.get("/ui/", redirect),
        web.get("/ui/static/{name}", static_file),
    ]
