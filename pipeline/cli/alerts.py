"""`tracepipe alerts`: the active alerts (or recent alert events) of the pipeline, anomaly and
budget alerts alike.

It asks the running pipeline's API (GET /api/alerts at service.api.endpoint, or --api URL).
When nothing answers there and no --api was given, it reads the alert history the embedded
runtime keeps in <data_dir>/alerts/alerts.jsonl (alerts.persist), read-only, and says so.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipeline.cli.options import config_options, load_or_exit, token_option
from pipeline.cli.style import color_option, current_term
from pipeline.query.term import PLAIN, Col, Term, dim_dash, fit_line, fmt_usd, table


@click.command("alerts")
@config_options
@click.option("--all", "show_all", is_flag=True, help="Recent firing and resolved events, not only active alerts.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Alerts (or events with --all) listed at most, newest first.")
@click.option(
    "--api",
    "--api-url",
    "api_url",
    metavar="URL",
    help="API of the running pipeline (http://host:8081 or host:8081; default: service.api.endpoint).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@token_option
@color_option
def alerts(
    config_path: str | None, data_dir: str | None, show_all: bool, limit: int, api_url: str | None, as_json: bool
) -> None:
    """Show active alerts: anomaly alerts (rule, key, observed value, baseline) and budget alerts
    (threshold crossed, spent, until the period resets)."""
    from pipeline.cli.api_client import ApiUnreachable, QueryFailed
    from pipeline.cli.api_client import api_get as _api_get

    cfg = load_or_exit(config_path, data_dir=data_dir)
    explicit = api_url is not None
    if api_url and "://" not in api_url:
        api_url = f"http://{api_url}"
    where = api_url or (f"http://{cfg.service.api.endpoint}" if cfg.service.api.endpoint else None)
    note = ""
    try:
        answer = _api_get(cfg, "/api/alerts", {"state": "all" if show_all else "active", "limit": limit}, api_url)
    except QueryFailed as e:
        raise click.ClickException(f"{where}: {e.args[0]}") from None
    except ApiUnreachable as e:
        answer = None if explicit else _from_history(cfg, show_all, limit)
        if answer is None:
            hint = "" if explicit else " (start it with `tracepipe run`, or point --api at it)"
            raise click.ClickException(
                f"no tracepipe pipeline answers at {where or 'the API (disabled in this config)'}: {e}{hint}"
            ) from None
        note = f"(no pipeline answers at {where or 'the API'}: from the saved history {answer.pop('file')})"
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    term = current_term()
    if note:
        click.echo(fit_line(note, term), err=True)
    rows = answer.get("alerts", [])
    if not rows:
        click.echo("no active alerts" if not show_all else "no alert events yet")
        return
    click.echo(format_table(rows, term))


def _from_history(cfg: Any, show_all: bool, limit: int) -> dict[str, Any] | None:
    """The answer GET /api/alerts would give, from the embedded runtime's history file."""
    from pipeline.alerts.store import AlertStore
    from pipeline.runtime_support import alerts_file

    path = alerts_file(cfg)
    if not path.exists():
        return None
    store = AlertStore(history=cfg.alerts.history, max_active=cfg.alerts.max_active, path=path, read_only=True)
    active = store.active()
    rows = store.recent(limit) if show_all else active[:limit]
    return {"state": "all" if show_all else "active", "active_count": len(active), "alerts": rows,
            "file": str(path)}


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _is_budget(r: dict[str, Any]) -> bool:
    return str(r.get("type", "")).startswith("budget") or r.get("kind") == "budget"


def _observed(r: dict[str, Any], v: Any) -> str:
    return fmt_usd(v) if r.get("metric") == "spend_usd" and isinstance(v, int | float) else _num(v)


def _severity_style(cell: str) -> tuple[str, ...]:
    return {"critical": ("red", "bold"), "warning": ("yellow",), "info": ("cyan",)}.get(cell, ())


def _state_style(cell: str) -> tuple[str, ...]:
    return ("red",) if cell == "firing" else ("green",) if cell == "resolved" else ()


def format_table(rows: list[dict[str, Any]], term: Term = PLAIN) -> str:
    """One line per alert: anomaly alerts show the baseline and threshold of their rule; budget
    alerts the limit and the share of it crossed, and end when their period resets."""
    cols = [
        Col("STATE", min_width=5, style=_state_style),
        Col("SEVERITY", min_width=4, drop=3, style=_severity_style),
        Col("TYPE", min_width=6, drop=2),
        Col("RULE", cut="middle", min_width=10),
        Col("KEY", cut="middle", min_width=10),
        Col("METRIC", min_width=6, drop=1),
        Col("OBSERVED", kind="num"),
        Col("BASE/LIMIT", kind="num", drop=0, style=dim_dash),
        Col("THRESHOLD", kind="num"),
        Col("WINDOW_END", min_width=10, drop=4),
    ]
    body = []
    for r in rows:
        key = ",".join(f"{k}={v or '-'}" for k, v in (r.get("key") or {}).items())
        budget = _is_budget(r)
        if budget:
            baseline = fmt_usd(r["limit_usd"]) if r.get("limit_usd") is not None else _num(r.get("limit_tokens"))
            threshold = f"{float(r.get('threshold') or 0) * 100:g}%"
        else:
            baseline = _num((r.get("baseline") or {}).get("mean"))
            threshold = _num(r.get("threshold"))
        body.append(
            [
                str(r.get("state", "")),
                str(r.get("severity", "")),
                "budget" if budget else str(r.get("type") or "anomaly"),
                str(r.get("rule", "")),
                key,
                str(r.get("metric", "")),
                _observed(r, r.get("observed")),
                baseline,
                threshold,
                str((r.get("window") or {}).get("end", "")),
            ]
        )
    return table(cols, body, term)


def register(group: click.Group) -> None:
    group.add_command(alerts)
