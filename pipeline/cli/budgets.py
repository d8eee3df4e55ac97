"""`tracepipe budgets show SCOPE ID`: spent, limit, remaining and reset of every period.

Redis-backed budgets are read from Redis directly (the URL in the config's budgets
sink). Budgets kept in the embedded pipeline's local store are asked of the running
pipeline's API, or read from the store's snapshot file when nothing runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from pipeline.cli.options import config_options, load_or_exit, token_option
from pipeline.cli.style import color_option, current_term
from pipeline.query.term import PLAIN, Col, Term, fmt_usd, money_style, table
from pipeline.tenants import DEFAULT_TENANT


@click.group("budgets")
def budgets() -> None:
    """Live budgets: spend against limits per user, tenant, customer, session, feature, model or service."""


@budgets.command("show")
@click.argument("scope")
@click.argument("id_", metavar="ID")
@config_options
@click.option("--tier", help="Tier used for the limit of an id that has not spent anything yet.")
@click.option("--tenant", help="The tracepipe tenant whose counters to read (default: 'default'; through the API "
              "a read token always reads its own).")
@click.option("--api-url", metavar="URL", help="Ask this API (http://host:8081) for embedded local budgets.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@token_option
@color_option
def show(
    scope: str,
    id_: str,
    config_path: str | None,
    data_dir: str | None,
    tier: str | None,
    tenant: str | None,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Show where ID stands in every budget of SCOPE (e.g. `user u-42`, `customer+feature acme/chat`)."""
    cfg = load_or_exit(config_path, data_dir=data_dir)
    from pipeline.budgets.registry import build_budget_store
    from pipeline.budgets.store import LocalBudgetStore, StoreUnavailable

    registry = build_budget_store(cfg)
    if registry is None:
        raise click.ClickException("this config has no budgets sink")
    rows: list[dict[str, Any]] | None = None
    has_local = any(isinstance(e.store, LocalBudgetStore) for e in registry.entries.values())
    if has_local or api_url:
        rows = _from_api(cfg, scope, id_, tier, api_url, tenant)

    async def direct() -> list[dict[str, Any]]:
        try:
            await registry.start()
            return [s.to_json() for s in await registry.status(scope, id_, tier, tenant=tenant or DEFAULT_TENANT)]
        finally:
            await registry.close()

    if rows is None:
        try:
            rows = asyncio.run(direct())
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        except StoreUnavailable as e:
            raise click.ClickException(f"budget store unavailable: {e}") from None
    if not rows:
        raise click.ClickException(f"no budget has scope {scope}")
    if as_json:
        click.echo(json.dumps({"scope": scope, "id": id_, "budgets": rows}, indent=2))
        return
    click.echo(format_table(rows, current_term()))


def _from_api(
    cfg: Any, scope: str, id_: str, tier: str | None, api_url: str | None, tenant: str | None = None
) -> list[dict[str, Any]] | None:
    from urllib.parse import quote

    from pipeline.cli.api_client import ApiUnreachable, QueryFailed
    from pipeline.cli.api_client import api_get as _api_get

    path = f"/api/budgets/{quote(scope, safe='+')}/{quote(id_, safe='/@')}"
    try:
        answer = _api_get(cfg, path, {"tier": tier, "as_tenant": tenant}, api_url)
    except QueryFailed as e:
        raise click.ClickException(e.args[0]) from None
    except ApiUnreachable:
        if api_url is not None:
            raise click.ClickException(f"nothing answers at {api_url}") from None
        return None
    return list(answer.get("budgets", []))


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)


def _state_style(cell: str) -> tuple[str, ...]:
    if cell == "EXCEEDED":
        return ("red", "bold")
    if cell.endswith("%") and cell[:-1].isdigit():
        pct = int(cell[:-1])
        return ("red",) if pct >= 100 else ("yellow",) if pct >= 80 else ("green",)
    return ()


def format_table(rows: list[dict[str, Any]], term: Term = PLAIN) -> str:
    """Where an id stands in each budget, in the table style of `tracepipe cost` (money from
    pipeline.query.term.fmt_usd, cut to the terminal width)."""
    cols = [
        Col("BUDGET", cut="middle", min_width=8),
        Col("PERIOD", min_width=5, drop=2),
        Col("SPENT", kind="num", style=money_style),
        Col("LIMIT", kind="num"),
        Col("REMAINING", kind="num", drop=3),
        Col("TOKENS", kind="num", drop=1),
        Col("TOKEN LIMIT", kind="num", drop=0),
        Col("RESETS AT", min_width=10, drop=4),
        Col("USED", kind="num", style=_state_style),
    ]
    body = []
    for r in rows:
        util = r.get("utilization")
        state = "EXCEEDED" if r["exceeded"] else ("-" if util is None else f"{util * 100:.0f}%")
        body.append(
            [
                str(r["budget"]),
                str(r["period"]),
                fmt_usd(r["spent_usd"]),
                fmt_usd(r["limit_usd"]),
                fmt_usd(r["remaining_usd"]),
                str(r["spent_tokens"]),
                _num(r["limit_tokens"]),
                str(r["reset_at"]),
                state,
            ]
        )
    return table(cols, body, term)


def register(group: click.Group) -> None:
    group.add_command(budgets)
