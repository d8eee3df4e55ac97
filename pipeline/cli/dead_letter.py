"""`tracepipe dead-letter list|show ID|replay [ID|--all]`: spans a sink or processor refused.

Like `tracepipe traces`, the commands ask the running pipeline through its API
(service.api.endpoint, or --api-url) and, when nothing answers there, open the dead-letter
store under <data_dir>/dead-letter/ themselves. A replay without a running pipeline builds
the chain of the config (opening its sinks) for the time of the replay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import click

from pipeline.cli.api_client import api_get as _api_get
from pipeline.cli.api_client import api_request, ask_or_open
from pipeline.cli.options import config_options, load_or_exit
from pipeline.cli.query import api_option
from pipeline.config import Config


def _api_post(cfg: Config, path: str, api_url: str | None) -> Any:
    return api_request(cfg, "POST", path, None, api_url, timeout=600)[1]


async def _local(cfg: Config, call: str, *args: Any, with_chain: bool = False, **kwargs: Any) -> Any:
    from pipeline.dead_letter.service import DeadLetterService
    from pipeline.dead_letter.store import LocalDeadLetterStore, store_path

    if not store_path(cfg.data_dir).exists():
        raise click.ClickException(f"no dead-letter store under {cfg.data_dir} (nothing was dead-lettered there)")
    store = LocalDeadLetterStore.under(cfg.data_dir)
    chain = None
    try:
        if with_chain:
            from pipeline.builder import build_chain
            from pipeline.telemetry import Telemetry

            chain = build_chain(cfg, Telemetry())
            await chain.start()
            chain.dead_letter = store
        return await getattr(DeadLetterService(store, chain), call)(*args, **kwargs)
    finally:
        if chain is not None:
            await chain.close()
        await store.close()


def _ask(cfg: Config, api_url: str | None, method: str, path: str, params: dict[str, Any], call: str,
         *args: Any, with_chain: bool = False, **kwargs: Any) -> Any:
    from pipeline.dead_letter.service import DeadLetterNotFound

    def ask() -> Any:
        return _api_get(cfg, path, params, api_url) if method == "GET" else _api_post(cfg, path, api_url)

    def open_locally() -> Any:
        try:
            return asyncio.run(_local(cfg, call, *args, with_chain=with_chain, **kwargs))
        except DeadLetterNotFound as e:
            raise click.ClickException(f"dead letter {e.args[0]} not found") from None

    return ask_or_open(ask, open_locally, api_url)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def render_list(result: dict[str, Any]) -> str:
    entries = result.get("entries", [])
    if not entries:
        return "no dead letters"
    lines = [f"{'ID':<36} {'WHEN (UTC)':<19} {'SPANS':>6}  {'REASON':<20} {'REFUSED BY':<20} {'STATUS':<12}"]
    for e in entries:
        lines.append(f"{e['id']:<36} {_when(e['at']):<19} {e['spans']:>6}  {e['reason']:<20} "
                     f"{e['component']:<20} {e['status']:<12}")
    return "\n".join(lines)


def render_entry(e: dict[str, Any]) -> str:
    lines = [
        f"id:          {e['id']}",
        f"when (UTC):  {_when(e['at'])}",
        f"reason:      {e['reason']}",
        f"refused by:  {e['kind']} {e['component']} (pipeline {e['pipeline']})",
        f"error:       {e['error']}",
        f"batch:       {e['batch_id']}",
        f"status:      {e['status']}" + (f" at {_when(e['replayed_at'])}" if e.get("replayed_at") else ""),
    ]
    if e.get("replay_of"):
        lines.append(f"replay of:   {e['replay_of']}")
    lines.append(f"spans ({e['spans']}):")
    for s in e.get("span_list", []):
        lines.append(f"  {s['trace_id']} {s['span_id']} {s['service']} {s['name']!r} "
                     f"start={s['start_ns']} end={s['end_ns']}")
    return "\n".join(lines)


@click.group("dead-letter")
def dead_letter() -> None:
    """Spans a sink or processor refused for good: see them, replay them after a fix."""


@dead_letter.command("list")
@config_options
@api_option
@click.option("--status", type=click.Choice(["new", "replayed", "failed_again"]), help="Only entries in this state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Entries listed at most.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
             status: str | None, limit: int, as_json: bool) -> None:
    """List dead letters, oldest first: id, time, spans, reason, the component that refused them."""
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    result = _ask(cfg, api_url, "GET", "/api/dead-letters", {"status": status, "limit": limit}, "list",
                  status=status, limit=limit)
    click.echo(json.dumps(result, indent=2) if as_json else render_list(result))


@dead_letter.command("show")
@click.argument("entry_id", metavar="ID")
@config_options
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print the entry with its OTLP/JSON spans.")
def show_cmd(entry_id: str, config_path: str | None, data_dir: str | None, api: str | None,
             api_url: str | None, as_json: bool) -> None:
    """Show one dead letter: why, who refused it, when, and its spans."""
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    result = _ask(cfg, api_url, "GET", f"/api/dead-letters/{entry_id}", {}, "show", entry_id)
    click.echo(json.dumps(result, indent=2) if as_json else render_entry(result))


@dead_letter.command("replay")
@click.argument("entry_id", metavar="[ID]", required=False)
@click.option("--all", "replay_all", is_flag=True, help="Replay every entry with status new.")
@config_options
@api_option
@click.option("--json", "as_json", is_flag=True, help="Print the replay counts as JSON.")
def replay_cmd(entry_id: str | None, replay_all: bool, config_path: str | None, data_dir: str | None,
               api: str | None, api_url: str | None, as_json: bool) -> None:
    """Send dead letters back to the sink (or processor) that refused them, e.g. after a fix.

    Spans refused again become new entries; the replayed entry is marked replayed or
    failed_again."""
    if bool(entry_id) == replay_all:
        raise click.UsageError("give one ID or --all")
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    if replay_all:
        result = _ask(cfg, api_url, "POST", "/api/dead-letters/replay", {}, "replay_all", with_chain=True)
        text = (f"replayed {result['entries']} entries: {result['stored']} spans stored, "
                f"{result['dead_lettered_again']} refused again")
    else:
        result = _ask(cfg, api_url, "POST", f"/api/dead-letters/{entry_id}/replay", {}, "replay", entry_id,
                      with_chain=True)
        text = (f"{result['id']}: {result['stored']} of {result['spans']} spans stored, "
                f"{result['dead_lettered_again']} refused again ({result['status']})")
    click.echo(json.dumps(result, indent=2) if as_json else text)
    if result["dead_lettered_again"]:
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(dead_letter)
