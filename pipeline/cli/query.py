"""Query commands: `tracepipe traces show|list` and `tracepipe cost`.

They ask the running pipeline through its API (service.api.endpoint) and, when nothing
answers there, open the data themselves (the chDB directory, or the ClickHouse server of
the config). Both paths return the same JSON, rendered the same way.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from pipeline.cli.api_client import api_get as _api_get
from pipeline.cli.api_client import ask_or_open
from pipeline.cli.options import config_options, endpoint_options, load_or_exit, token_option
from pipeline.cli.style import color_option, current_term
from pipeline.config import Config

# The `by` values of GET /api/analytics/cost (pipeline.query.traces.COST_DIMENSIONS, not imported:
# it would load clickhouse-connect at CLI start).
COST_DIMENSIONS = (
    "model", "response_model", "service", "user", "feature", "operation", "provider", "session", "tenant", "customer",
)  # fmt: skip


def _local(cfg: Config, call: str, *args: Any, **kwargs: Any) -> Any:
    from pipeline.runtime_support import open_queries

    async def go() -> Any:
        queries = await open_queries(cfg)
        if queries is None:
            raise click.ClickException("this config has no clickhouse sink to query")
        try:
            return await getattr(queries, call)(*args, **kwargs)
        finally:
            closer = getattr(queries, "close", None)
            if closer is not None:
                res = closer()
                if asyncio.iscoroutine(res):
                    await res

    return asyncio.run(go())


def _fetch(cfg: Config, api_url: str | None, path: str, params: dict[str, Any], call: str,
           *args: Any, **kwargs: Any) -> Any:
    """The API's answer (None for 404), or the local store's when no pipeline answers."""
    return ask_or_open(lambda: _api_get(cfg, path, params, api_url), lambda: _local(cfg, call, *args, **kwargs),
                       api_url, missing=lambda: None)


def api_option(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--api-url", metavar="URL",
                      help="Ask this API (e.g. http://host:8081) instead of the config's service.api.")(fn)
    return token_option(endpoint_options("api")(fn))


@click.group()
def traces() -> None:
    """Look at stored traces."""


@traces.command("show")
@click.argument("trace_id")
@config_options
@api_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the trace as JSON instead of a tree (with each span's log events under `logs`).")
@color_option
def traces_show(trace_id: str, config_path: str | None, data_dir: str | None, api: str | None,
                api_url: str | None, as_json: bool) -> None:
    """Print the span tree of TRACE_ID (32 hex chars) with start offsets, timeline bars, durations,
    models, tokens and cost."""
    from pipeline.query.render import render_trace

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise click.BadParameter("a trace id is 32 hex characters", param_hint="TRACE_ID")
    trace = _fetch(cfg, api_url, f"/api/traces/{tid}", {}, "get_trace", tid)
    if trace is None:
        click.echo(f"trace {tid} not found", err=True)
        sys.exit(1)
    click.echo(json.dumps(trace, indent=2) if as_json else render_trace(trace, current_term()))


@traces.command("list")
@config_options
@api_option
@click.option("--service", help="Only traces with a span of this service (service.name).")
@click.option("--model", help="Only traces with an LLM call of this model (request or response model).")
@click.option("--user", help="Only traces of this user (user.id / enduser.id).")
@click.option("--session", help="Only the traces of this session (session.id or gen_ai.conversation.id).")
@click.option("--status", type=click.Choice(["ok", "error", "unset"]),
              help="Only traces of this status (error: a span failed; else the root span's status).")
@click.option("--min-cost", type=float, help="Only traces costing at least this many USD.")
@click.option("--since", help="Only traces started within this window, e.g. 15m, 24h, 7d.")
@click.option("--limit", type=int, default=20, show_default=True, help="Traces per page.")
@click.option("--cursor", help="Start after this cursor (printed as the next page cursor of a previous page).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@color_option
def traces_list(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
                service: str | None,
                model: str | None, user: str | None, session: str | None, status: str | None,
                min_cost: float | None, since: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """List recent traces (newest first) with their totals."""
    from pipeline.query.render import render_trace_list

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    params = {"service": service, "model": model, "user": user, "session": session, "status": status,
              "min_cost": min_cost, "since": since, "limit": limit, "cursor": cursor}
    result = _fetch(cfg, api_url, "/api/traces", params, "list_traces",
                    **{k: v for k, v in params.items() if v is not None})
    click.echo(json.dumps(result, indent=2) if as_json else render_trace_list(result, current_term()))


@click.command()
@config_options
@api_option
@click.option("--by", "by", type=click.Choice(list(COST_DIMENSIONS)), default="model", show_default=True,
              help="Group spend by this dimension (model: the request model, else the response model).")
@click.option("--since", default="24h", show_default=True, help="Window to look at, e.g. 15m, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@color_option
def cost(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None, by: str,
         since: str, as_json: bool) -> None:
    """Spend, tokens, call count and p50/p95 latency per group; the total says how many unpriced
    calls it leaves out."""
    from pipeline.query.render import render_cost

    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    rows = _fetch(cfg, api_url, "/api/analytics/cost", {"by": by, "since": since}, "cost_by", by, since=since)
    click.echo(json.dumps(rows, indent=2) if as_json else render_cost(rows, by, current_term()))


def register(group: click.Group) -> None:
    group.add_command(traces)
    group.add_command(cost)
