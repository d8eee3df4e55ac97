"""`tracepipe alerts`: the active alerts (or recent alert events) of the running pipeline.

Alerts live in the running pipeline's memory, so this asks its API (GET /api/alerts at
service.api.endpoint, or --api URL). When nothing answers there it says so.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli.options import config_options, load_or_exit, token_option


@click.command("alerts")
@config_options
@click.option("--all", "show_all", is_flag=True, help="Recent firing and resolved events, not only active alerts.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option(
    "--api",
    "--api-url",
    "api_url",
    metavar="URL",
    help="API of the running pipeline (http://host:8081 or host:8081; default: service.api.endpoint).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@token_option
def alerts(
    config_path: str | None, data_dir: str | None, show_all: bool, limit: int, api_url: str | None, as_json: bool
) -> None:
    """Show active anomaly alerts (rule, key, observed value, baseline, since when)."""
    from pipeline.cli.api_client import ApiUnreachable, QueryFailed
    from pipeline.cli.api_client import api_get as _api_get

    cfg = load_or_exit(config_path, data_dir=data_dir)
    if api_url and "://" not in api_url:
        api_url = f"http://{api_url}"
    where = api_url or (f"http://{cfg.service.api.endpoint}" if cfg.service.api.endpoint else None)
    try:
        answer = _api_get(cfg, "/api/alerts", {"state": "all" if show_all else "active", "limit": limit}, api_url)
    except QueryFailed as e:
        raise click.ClickException(f"{where}: {e.args[0]}") from None
    except ApiUnreachable as e:
        hint = "" if api_url else " (start it with `tracepipe run`, or point --api at it)"
        raise click.ClickException(
            f"no tracepipe pipeline answers at {where or 'the API (disabled in this config)'}: {e}{hint}"
        ) from None
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = answer.get("alerts", [])
    if not rows:
        click.echo("no active alerts" if not show_all else "no alert events yet")
        return
    click.echo(format_table(rows))


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ("STATE", "SEVERITY", "RULE", "KEY", "METRIC", "OBSERVED", "BASELINE", "THRESHOLD", "WINDOW_END")
    table = [head]
    for r in rows:
        key = ",".join(f"{k}={v or '-'}" for k, v in (r.get("key") or {}).items())
        baseline = (r.get("baseline") or {}).get("mean")
        table.append(
            (
                str(r.get("state", "")),
                str(r.get("severity", "")),
                str(r.get("rule", "")),
                key,
                str(r.get("metric", "")),
                _num(r.get("observed")),
                _num(baseline),
                _num(r.get("threshold")),
                str((r.get("window") or {}).get("end", "")),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def register(group: click.Group) -> None:
    group.add_command(alerts)
