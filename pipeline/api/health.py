"""GET /healthz (liveness) and GET /readyz (readiness: transport and sinks connected)."""

from __future__ import annotations

from aiohttp import web

from pipeline.api import CONTEXT_KEY


def _check(checks: dict) -> tuple[bool, dict[str, dict[str, object]]]:
    results: dict[str, dict[str, object]] = {}
    all_ok = True
    for name, fn in checks.items():
        try:
            ok, detail = fn()
        except Exception as e:  # a failing probe is a failed check, not a 500
            ok, detail = False, f"check raised {type(e).__name__}"
        results[name] = {"ok": ok, "detail": detail}
        all_ok = all_ok and ok
    return all_ok, results


async def healthz(request: web.Request) -> web.Response:
    ok, results = _check(request.app[CONTEXT_KEY].liveness)
    return web.json_response({"status": "ok" if ok else "unhealthy", "checks": results}, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    ok, results = _check(request.app[CONTEXT_KEY].readiness)
    return web.json_response({"status": "ready" if ok else "not ready", "checks": results},
                             status=200 if ok else 503)


def routes() -> list[web.RouteDef]:
    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
