"""The CLI's client of the running pipeline's API: one place for the URL, the bearer token and errors.

Every command that asks the pipeline (`traces`, `cost`, `sessions`, `users`, `budgets show`,
`alerts`, `dead-letter`, `forget`, `audit`) goes through `api_request`: the API of the config
(`service.api.endpoint`; https when it has `tls`; a wildcard bind is reached on loopback) or
`--api-url`, with `Authorization: Bearer` from `--token` / `TRACEPIPE_TOKEN`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.cli.options import current_token
from pipeline.config import Config, parse_endpoint


class ApiUnreachable(Exception):
    """Nothing answers at the API address (the caller then opens the data itself)."""


class QueryFailed(Exception):
    """The API answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def api_base_url(cfg: Config, api_url: str | None = None) -> str:
    if api_url is not None:
        return api_url.rstrip("/")
    if not cfg.service.api.endpoint:
        raise ApiUnreachable("the API is disabled in this config")
    host, port = parse_endpoint(cfg.service.api.endpoint)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    scheme = "https" if cfg.service.api.tls is not None else "http"
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


def api_request(
    cfg: Config,
    method: str,
    path: str,
    params: Mapping[str, Any] | None = None,
    api_url: str | None = None,
    *,
    timeout: float = 30,
    error_body_is_answer: Callable[[Any], bool] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """(status, JSON body) of one request (`body`: sent as JSON). ApiUnreachable when nothing listens;
    QueryFailed for an error answer, unless `error_body_is_answer(body)` says that error body is the
    answer itself."""
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    url = api_base_url(cfg, api_url) + path + (f"?{query}" if query else "")
    token = current_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"" if method == "POST" else None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read())
        except ValueError:
            raise QueryFailed(e.code, str(e.reason)) from None
        if error_body_is_answer is not None and error_body_is_answer(body):
            return e.code, body
        message = body.get("error", str(e.reason)) if isinstance(body, dict) else str(e.reason)
        raise QueryFailed(e.code, message) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise ApiUnreachable(str(getattr(e, "reason", e))) from None


def api_get(cfg: Config, path: str, params: Mapping[str, Any] | None = None, api_url: str | None = None) -> Any:
    """The JSON body of a GET (see api_request)."""
    return api_request(cfg, "GET", path, params, api_url)[1]


_LOCAL_STORE_ERRORS = ("StoreLockedError", "StoreMissingError")  # pipeline.query.store, not imported: it loads chDB


def ask_or_open(ask: Callable[[], Any], open_locally: Callable[[], Any], api_url: str | None, *,
                missing: Callable[[], Any] | None = None) -> Any:
    """The CLI's one rule: ask the running pipeline (`ask`), and only when nothing answers at the
    config's API open the data directory itself (`open_locally`). An explicit `--api-url` that does
    not answer is an error; a 404 is `missing()` when given; refusals name the token options;
    ValueError and store errors of the local path become one-line CLI errors."""
    import click

    try:
        return ask()
    except QueryFailed as e:
        if e.status == 404 and missing is not None:
            return missing()
        if e.status in (401, 403):
            hint = "" if current_token() else " (pass --token or set TRACEPIPE_TOKEN)"
            raise click.ClickException(f"the API refused the request: {e.args[0]}{hint}") from None
        raise click.ClickException(e.args[0]) from None
    except ApiUnreachable:
        if api_url is not None:
            raise click.ClickException(f"nothing answers at {api_url}") from None
    try:
        return open_locally()
    except click.ClickException:
        raise
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    except Exception as e:
        if type(e).__name__ in _LOCAL_STORE_ERRORS:
            raise click.ClickException(str(e)) from None
        raise
