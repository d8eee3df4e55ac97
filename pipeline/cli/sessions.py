"""`tracepipe sessions list|show ID` and `tracepipe users show ID`.

Like the other query commands they ask the running pipeline's API (GET /api/sessions,
/api/sessions/{id}, /api/users/{id}) and open the data themselves when nothing answers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from pipeline.cli.api_client import api_get as _api_get
from pipeline.cli.api_client import ask_or_open
from pipeline.cli.options import config_options, load_or_exit
from pipeline.cli.query import api_option
from pipeline.cli.style import color_option, current_term
from pipeline.config import Config


def _local(cfg: Config, name: str, *args: Any, **kwargs: Any) -> Any:
    from pipeline.query import sessions as sq
    from pipeline.runtime_support import open_queries

    async def go() -> Any:
        queries = await open_queries(cfg)
        if queries is None:
            raise click.ClickException("this config has no clickhouse sink to query")
        try:
            return await getattr(sq, name)(queries, *args, **kwargs)
        finally:
            await queries.close()

    return asyncio.run(go())


def _fetch(cfg: Config, api_url: str | None, path: str, params: dict[str, Any], name: str,
           *args: Any, **kwargs: Any) -> Any:
    """The API's answer (None for 404), or the local store's when no pipeline answers."""
    return ask_or_open(lambda: _api_get(cfg, path, params, api_url), lambda: _local(cfg, name, *args, **kwargs),
                       api_url, missing=lambda: None)


@click.group()
def sessions() -> None:
    """Conversations (session.id, else gen_ai.conversation.id): turns, cost, tokens, latency."""


@sessions.command("list")
@config_options
@api_option
@click.option("--user", help="Only sessions this user took part in.")
@click.option("--since", default="7d", show_default=True, help="Sessions active within this window.")
@click.option("--limit", type=int, default=20, show_default=True, help="Sessions listed at most.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@color_option
def sessions_list(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
                  user: str | None, since: str, limit: int, as_json: bool) -> None:
    """List sessions, most recently active first, with their totals."""
    from pipeline.query.render_sessions import render_session_list

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    params = {"user": user, "since": since, "limit": limit}
    result = _fetch(cfg, api_url, "/api/sessions", params, "list_sessions",
                    **{k: v for k, v in params.items() if v is not None})
    click.echo(json.dumps(result, indent=2) if as_json else render_session_list(result, current_term()))


@sessions.command("show")
@click.argument("session_id")
@config_options
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@color_option
def sessions_show(session_id: str, config_path: str | None, data_dir: str | None, api: str | None,
                  api_url: str | None, as_json: bool) -> None:
    """The turns of SESSION_ID in order (trace id, latency, tokens, cost, errors) and totals."""
    import urllib.parse

    from pipeline.query.render_sessions import render_session

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    path = f"/api/sessions/{urllib.parse.quote(session_id, safe='')}"
    result = _fetch(cfg, api_url, path, {}, "get_session", session_id)
    if result is None:
        click.echo(f"session {session_id} not found", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2) if as_json else render_session(result, current_term()))


@click.group()
def users() -> None:
    """A user's traces and spend over time."""


@users.command("show")
@click.argument("user_id")
@config_options
@api_option
@click.option("--since", default="30d", show_default=True, help="Window to look at, e.g. 24h, 30d.")
@click.option("--interval", type=click.Choice(["hour", "day"]), default="day", show_default=True,
              help="Bucket of the spend series.")
@click.option("--limit", type=int, default=20, show_default=True, help="Recent traces listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of tables.")
@color_option
def users_show(user_id: str, config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
               since: str, interval: str, limit: int, as_json: bool) -> None:
    """USER_ID's totals, spend per hour or day, and recent traces."""
    import urllib.parse

    from pipeline.query.render_sessions import render_user

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    path = f"/api/users/{urllib.parse.quote(user_id, safe='')}"
    params = {"since": since, "interval": interval, "limit": limit}
    result = _fetch(cfg, api_url, path, params, "get_user", user_id, **params)
    if result is None:
        click.echo(f"user {user_id} has no traces in the last {since}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2) if as_json else render_user(result, current_term()))


def register(group: click.Group) -> None:
    group.add_command(sessions)
    group.add_command(users)
