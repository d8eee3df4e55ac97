"""`tracepipe forget` (delete a user's, a trace's or a tenant's data) and `tracepipe audit`.

Both ask the running pipeline through its API (DELETE /api/users|traces|tenants/..., GET /api/audit,
with the bearer token of TRACEPIPE_TOKEN when set) and, when nothing answers there, open the data
themselves: the chDB directory or ClickHouse server, the budget store and the audit files of the
config. A local forget is written to the audit log too (token id `cli-local`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from pipeline.cli.api_client import api_request, ask_or_open
from pipeline.cli.options import config_options, load_or_exit
from pipeline.cli.query import api_option
from pipeline.config import Config


def _api(cfg: Config, method: str, path: str, params: dict[str, Any], api_url: str | None) -> tuple[int, Any]:
    """(status, JSON body); a forget with a failing store still answers its counts (`removed`)."""
    return api_request(cfg, method, path, params, api_url, timeout=120,
                       error_body_is_answer=lambda body: isinstance(body, dict) and "removed" in body)


def _local_forget(cfg: Config, request: Any) -> dict[str, Any]:
    from pipeline.deletion import build_forgetter
    from pipeline.runtime_support import build_services, close_services_and_queries, open_queries
    from pipeline.telemetry import Telemetry

    async def go() -> dict[str, Any]:
        services = await build_services(cfg, Telemetry())
        queries = None
        try:
            queries = await open_queries(cfg)
            result = await build_forgetter(queries, services).forget(request)
            audit = services.audit
            if audit is not None:
                await audit.record(
                    token_id="cli-local",
                    tenant="default",
                    method="DELETE",
                    route=f"tracepipe forget --{request.kind}",
                    params={"id": request.value},
                    query={"tenant": request.tenant} if request.tenant else {},
                    status=200 if result.ok else 500,
                )
            return result.to_json()
        finally:
            await close_services_and_queries(services, queries)

    return asyncio.run(go())


def render_forget(body: dict[str, Any]) -> str:
    where = f"tenant {body['tenant']}" if body.get("tenant") else "every tenant"
    if body["kind"] == "tenant":
        head = f"forgot tenant {body['id']}"
    else:
        head = f"forgot {body['kind']} {body['id']} ({where})"
    lines = [head + ":"]
    for store, counts in body.get("removed", {}).items():
        shown = " ".join(f"{k}={v}" for k, v in counts.items()) or "nothing stored here"
        lines.append(f"  {store:<12} {shown}")
    for store, err in body.get("errors", {}).items():
        lines.append(f"  {store:<12} FAILED: {err}")
    return "\n".join(lines)


@click.command()
@config_options
@api_option
@click.option("--user", "user", metavar="ID", help="Forget this user: every trace with a span of theirs, "
              "their budget counters and alerts.")
@click.option("--trace", "trace", metavar="TRACE_ID", help="Forget this trace (32 hex chars).")
@click.option("--tenant", "tenant", metavar="TENANT", help="Alone: forget this whole tenant. With --user or "
              "--trace: only within this tenant.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def forget(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None,
           user: str | None, trace: str | None, tenant: str | None, yes: bool, as_json: bool) -> None:
    """Delete a user's, a trace's or a tenant's data everywhere tracepipe stores it (spans, trace
    summaries, budget counters, alerts, registered stores) and print the counts per store."""
    from pipeline.deletion import ForgetRequest

    if (user is not None) + (trace is not None) > 1 or (user is None and trace is None and tenant is None):
        raise click.UsageError("give exactly one of --user or --trace (optionally with --tenant), or --tenant alone")
    kind, value = ("user", user) if user is not None else ("trace", trace) if trace is not None else ("tenant", tenant)
    try:
        request = ForgetRequest(kind, value or "", tenant if kind != "tenant" else None)  # type: ignore[arg-type]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    if not yes:
        what = f"tenant {value}" if kind == "tenant" else f"{kind} {request.value}"
        click.confirm(f"Delete every stored row of {what}? This cannot be undone", abort=True)
    path = {"user": "/api/users/", "trace": "/api/traces/", "tenant": "/api/tenants/"}[kind]
    body = ask_or_open(
        lambda: _api(cfg, "DELETE", path + urllib.parse.quote(request.value, safe=""), {"tenant": request.tenant},
                     api_url)[1],
        lambda: _local_forget(cfg, request), api_url)
    click.echo(json.dumps(body, indent=2) if as_json else render_forget(body))
    if body.get("errors"):
        sys.exit(1)


def render_audit(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no audit entries"
    lines = [f"{'TIME':<24} {'TOKEN':<12} {'TENANT':<12} {'METHOD':<6} {'STATUS':<6} ROUTE"]
    for e in entries:
        params = " ".join(f"{k}={v}" for k, v in {**e.get("params", {}), **e.get("query", {})}.items())
        lines.append(f"{e['time']:<24} {e['token_id']:<12} {e['tenant']:<12} {e['method']:<6} {e['status']:<6} "
                     f"{e['route']}" + (f"  {params}" if params else ""))
    return "\n".join(lines)


@click.command()
@config_options
@api_option
@click.option("--since", default="24h", show_default=True, help="Entries within this window, e.g. 15m, 24h, 7d.")
@click.option("--token-id", "token_id", metavar="TOKEN_ID", help="Only this token id (12 hex digits).")
@click.option("--tenant", help="Only requests made by this tenant's tokens.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Entries listed at most, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def audit(config_path: str | None, data_dir: str | None, api: str | None, api_url: str | None, since: str,
          token_id: str | None, tenant: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log: who read or deleted what through the API, newest first."""
    from pipeline.audit import AuditLog
    from pipeline.query.traces import parse_since

    try:
        since_ns = parse_since(since)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    cfg = load_or_exit(config_path, data_dir=data_dir, api=api)
    params = {"since": since, "token": token_id, "tenant": tenant, "limit": limit}
    entries = ask_or_open(
        lambda: _api(cfg, "GET", "/api/audit", params, api_url)[1]["entries"],
        lambda: AuditLog.from_config(cfg.service.audit, cfg.data_dir).query(
            since_s=since_ns / 1e9, token=token_id, tenant=tenant, limit=limit),
        api_url)
    click.echo(json.dumps(entries, indent=2) if as_json else render_audit(entries))


def register(group: click.Group) -> None:
    group.add_command(forget)
    group.add_command(audit)
