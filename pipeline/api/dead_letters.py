"""Dead letters: spans a sink or processor refused for good (see pipeline/dead_letter).

- GET  /api/dead-letters                 entries, oldest first (`?status=new|replayed|failed_again`,
                                         `?limit=` 1..1000, default 100) and span counts by status
- GET  /api/dead-letters/{id}            one entry with its spans (a line per span and OTLP/JSON)
- POST /api/dead-letters/{id}/replay     send it back to the sink (or processor) that refused it
- POST /api/dead-letters/replay          replay every entry with status `new`

404 for an unknown id, 400 for bad parameters, 503 in a process without a dead-letter store.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from pipeline.api import CONTEXT_KEY, json_error

log = logging.getLogger("tracepipe.api")

_STATUSES = {"new", "replayed", "failed_again"}


def _service(request: web.Request) -> tuple[Any, web.Response | None]:
    service = request.app[CONTEXT_KEY].services.dead_letters
    if service is None:
        return None, json_error(503, "no dead-letter store in this process")
    return service, None


async def list_dead_letters(request: web.Request) -> web.Response:
    service, err = _service(request)
    if err is not None:
        return err
    status = request.query.get("status") or None
    if status is not None and status not in _STATUSES:
        return json_error(400, f"status: must be one of {', '.join(sorted(_STATUSES))}")
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return json_error(400, "limit: must be an integer from 1 to 1000")
    return web.json_response(await service.list(status=status, limit=int(raw)))


async def get_dead_letter(request: web.Request) -> web.Response:
    from pipeline.dead_letter.service import DeadLetterNotFound

    service, err = _service(request)
    if err is not None:
        return err
    entry_id = request.match_info["id"]
    try:
        return web.json_response(await service.show(entry_id))
    except DeadLetterNotFound:
        return json_error(404, f"dead letter {entry_id} not found")


async def replay_dead_letter(request: web.Request) -> web.Response:
    from pipeline.dead_letter.service import DeadLetterNotFound

    service, err = _service(request)
    if err is not None:
        return err
    entry_id = request.match_info["id"]
    try:
        return web.json_response(await service.replay(entry_id))
    except DeadLetterNotFound:
        return json_error(404, f"dead letter {entry_id} not found")
    except ValueError as e:
        return json_error(409, str(e))


async def replay_all(request: web.Request) -> web.Response:
    service, err = _service(request)
    if err is not None:
        return err
    return web.json_response(await service.replay_all())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/dead-letters", list_dead_letters),
        web.post("/api/dead-letters/replay", replay_all),
        web.get("/api/dead-letters/{id}", get_dead_letter),
        web.post("/api/dead-letters/{id}/replay", replay_dead_letter),
    ]
