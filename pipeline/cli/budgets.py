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
    click.echo(format_table(rows))


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


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "BUDGET",
        "PERIOD",
        "SPENT_USD",
        "LIMIT_USD",
        "REMAINING_USD",
        "TOKENS",
        "TOKEN_LIMIT",
        "RESETS_AT",
        "STATE",
    )
    table = [head]
    for r in rows:
        util = r.get("utilization")
        state = "EXCEEDED" if r["exceeded"] else ("-" if util is None else f"{util * 100:.0f}%")
        table.append(
            (
                r["budget"],
                r["period"],
                _money(r["spent_usd"]),
                _money(r["limit_usd"]),
                _money(r["remaining_usd"]),
                str(r["spent_tokens"]),
                _num(r["limit_tokens"]),
                r["reset_at"],
                state,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def register(group: click.Group) -> None:
    group.add_command(budgets)
