"""Terminal views of replay sets: `tracepipe replay list|show|run|compare`."""

from __future__ import annotations

from typing import Any

from pipeline.query.render import _when, fmt_usd
from pipeline.query.term import PLAIN, Col, Term, dim_dash, error_style, money_style, table


def fmt_delta_usd(value: float | None) -> str:
    """+$0.0012 / -$0.0030 / $0 ("-" when either side is unpriced)."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    return ("+" if value > 0 else "-") + fmt_usd(abs(value))


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.0f}" if signed else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def render_sets(rows: list[dict[str, Any]], term: Term = PLAIN) -> str:
    if not rows:
        return "no replay sets (tracepipe replay create NAME ...)"
    cols = [Col("NAME", kind="key"), Col("CREATED (UTC)"), Col("ITEMS", kind="num"), Col("MODELS"),
            Col("ORIGINAL COST", kind="num", style=money_style), Col("RUNS", kind="num"), Col("FILTERS")]
    body = [[r["name"], _when(r["created_ns"]), str(r["items"]), ", ".join(m for m in r["models"] if m) or "-",
             fmt_usd(r["original_cost_usd"]), str(r["runs"]),
             " ".join(f"{k}={v}" for k, v in sorted(r["filters"].items()))] for r in rows]
    return table(cols, body, term)


def render_set(s: dict[str, Any], term: Term = PLAIN) -> str:
    lines = [f"replay set {s['name']}: {len(s['items'])} calls, original cost {fmt_usd(s['original_cost_usd'])}"]
    cols = [Col("ITEM", kind="num"), Col("TRACE ID", kind="key"), Col("SERVICE"), Col("MODEL"),
            Col("TOKENS", kind="num"), Col("COST", kind="num", style=money_style), Col("LATENCY MS", kind="num"),
            Col("PROMPT", min_width=10)]
    body = []
    for it in s["items"]:
        last = next((m["content"] for m in reversed(it["input_messages"]) if m["role"] != "system"), "")
        body.append([str(it["item"]), it["trace_id"], it["service"], it["model"] or "-",
                     f"{it['input_tokens']}/{it['output_tokens']}", fmt_usd(it["cost_usd"]),
                     _ms(it["duration_ns"] / 1e6), " ".join(last.split())])
    lines.append(table(cols, body, term))
    for run in s.get("runs") or []:
        lines.append(f"run {run['run_id']}  {_when(run['started_ns'])}  {run['model']}  {run['items']} items"
                     f"  {run['errors']} errors")
    return "\n".join(lines)


def render_estimate(est: dict[str, Any]) -> str:
    unpriced = est["unpriced"]
    note = f" ({unpriced} calls of a model without a price left out)" if unpriced else ""
    return (f"replay {est['set']}: {est['items']} calls to {est['model']} at {est['endpoint']}\n"
            f"estimated cost {fmt_usd(est['estimated_cost_usd'])}{note}"
            f" (the original calls cost {fmt_usd(est['original_cost_usd'])};"
            " estimate: the original token counts priced for the new model)")


def render_compare(c: dict[str, Any], term: Term = PLAIN) -> str:
    run, t = c["run"], c["totals"]
    cols = [
        Col("ITEM", kind="num"), Col("ORIGINAL", drop=2), Col("REPLAY"),
        Col("COST", kind="num", style=money_style), Col("REPLAY COST", kind="num", style=money_style),
        Col("Δ COST", kind="num"), Col("MS", kind="num", drop=3), Col("REPLAY MS", kind="num", drop=3),
        Col("TOKENS IN/OUT", kind="num", drop=1), Col("REPLAY IN/OUT", kind="num", drop=1),
        Col("EXACT", style=dim_dash), Col("SIMILARITY", kind="num"), Col("ERROR", style=error_style, drop=4),
    ]
    body = []
    for r in c["items"]:
        ok = r["error"] is None
        body.append([
            str(r["item"]), r["original_model"] or "-", r["replay_model"] or "-", fmt_usd(r["original_cost_usd"]),
            fmt_usd(r["replay_cost_usd"]), fmt_delta_usd(r["cost_delta_usd"]), _ms(r["original_latency_ms"]),
            _ms(r["replay_latency_ms"]), f"{r['original_input_tokens']}/{r['original_output_tokens']}",
            f"{r['replay_input_tokens']}/{r['replay_output_tokens']}" if ok else "-",
            "-" if r["exact_match"] is None else ("yes" if r["exact_match"] else "no"),
            "-" if r["similarity"] is None else f"{r['similarity']:.3f}", r["error"] or "",
        ])
    sim = "-" if t["similarity_mean"] is None else f"{t['similarity_mean']:.3f}"
    body.append([
        "TOTAL", "", "", fmt_usd(t["original_cost_usd"]), fmt_usd(t["replay_cost_usd"]),
        fmt_delta_usd(t["cost_delta_usd"]), _ms(t["original_latency_ms_mean"]), _ms(t["replay_latency_ms_mean"]),
        f"{t['original_input_tokens']}/{t['original_output_tokens']}",
        f"{t['replay_input_tokens']}/{t['replay_output_tokens']}", f"{t['exact_matches']}/{t['items'] - t['errors']}",
        sim, str(t["errors"]) if t["errors"] else "",
    ])
    head = f"replay {c['set']} run {run['run_id']} ({run['model']}), {t['items']} items"
    summary = (
        f"cost {fmt_usd(t['original_cost_usd'])} -> {fmt_usd(t['replay_cost_usd'])}"
        f" ({fmt_delta_usd(t['cost_delta_usd'])}, {_pct(t['cost_delta_pct'])}) over {t['priced_items']} priced items;"
        f" mean latency {_ms(t['original_latency_ms_mean'])} -> {_ms(t['replay_latency_ms_mean'])} ms;"
        f" exact matches {t['exact_matches']}; mean similarity {sim}"
        + (f" (min {t['similarity_min']:.3f})" if t["similarity_min"] is not None else "")
        + (f"; {t['errors']} failed" if t["errors"] else "")
    )
    return "\n".join([head, table(cols, body, term, total_rows=1), summary])
