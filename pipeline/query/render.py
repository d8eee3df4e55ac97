"""Text renderings for the CLI, from the same dicts the API returns as JSON.

    rag-pipeline (2.5s, $0.0113)
    ├── retrieval (1.8s, $0.00002)
    │   ├── embedding (200ms, text-embedding-3-small, 1000 in, $0.00002)
    │   └── vector_search (1.58s)
    └── synthesis (690ms, gpt-4o, 2000 in / 500 out, $0.0113) ✗ ERROR: rate limited once
    5 spans, 1 error, 2.5s, 3000 in / 500 out tokens, $0.0113

A node's line shows its duration, then its own model, tokens and cost when it is an LLM
call; a node with children shows its subtree's cost instead when it has none of its own.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def fmt_usd(value: float | None) -> str:
    """$0.025, $1.50, $0.00002; "-" when unpriced."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    mag = abs(value)
    decimals = 2 if mag >= 1 else min(10, max(2, -math.floor(math.log10(mag)) + 2))
    text = f"{mag:.{decimals}f}"
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0")
        text = whole + "." + frac.ljust(2, "0")
    return ("-$" if value < 0 else "$") + text


def fmt_duration(ns: int | float | None) -> str:
    """2.5s, 200ms, 1.58s, 3m05s, 850µs."""
    if ns is None:
        return "-"
    ns = float(ns)
    if ns >= 60e9:
        total = round(ns / 1e9)
        h, rem = divmod(total, 3600)
        m, s = divmod(rem, 60)
        return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
    if ns >= 1e9:
        return f"{_sig(ns / 1e9)}s"
    if ns >= 1e6:
        return f"{_sig(ns / 1e6)}ms"
    if ns >= 1e3:
        return f"{_sig(ns / 1e3)}µs"
    return f"{int(ns)}ns"


def _sig(x: float) -> str:
    """Three significant digits, no trailing zeros (2.5, 1.58, 200, 12.3)."""
    if x >= 100:
        return str(round(x))
    text = f"{x:.2f}" if x < 10 else f"{x:.1f}"
    return text.rstrip("0").rstrip(".")


def fmt_tokens(inp: int, out: int, cache_read: int = 0) -> str:
    parts = []
    if inp:
        parts.append(f"{inp} in")
    if out:
        parts.append(f"{out} out")
    text = " / ".join(parts)
    if cache_read:
        text += f" (+{cache_read} cached)"
    return text


def _node_line(node: dict[str, Any]) -> str:
    details = [fmt_duration(node.get("duration_ns"))]
    own_cost = node.get("cost_usd")
    if node.get("model"):
        details.append(str(node["model"]))
    tokens = fmt_tokens(node.get("input_tokens", 0), node.get("output_tokens", 0), node.get("cache_read_tokens", 0))
    if tokens:
        details.append(tokens)
    sub = node.get("subtree") or {}
    if own_cost is not None:
        details.append(fmt_usd(own_cost))
        if node.get("children") and sub.get("cost_usd") is not None and sub["cost_usd"] != own_cost:
            details.append(f"subtree {fmt_usd(sub['cost_usd'])}")
    elif node.get("children") and sub.get("cost_usd") is not None:
        details.append(fmt_usd(sub["cost_usd"]))
    line = f"{node.get('name', '?')} ({', '.join(details)})"
    if node.get("status_code") == "Error":
        msg = node.get("status_message") or ""
        line += " ✗ ERROR" + (f": {msg}" if msg else "")
    if node.get("orphan"):
        line += " [parent not stored]"
    return line


def render_tree(roots: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    # (node, prefix for its own line, prefix for its children's lines); iterative for deep traces.
    stack: list[tuple[dict[str, Any], str, str]] = [(r, "", "") for r in reversed(roots)]
    while stack:
        node, head, tail = stack.pop()
        lines.append(head + _node_line(node))
        children = node.get("children") or []
        for i in range(len(children) - 1, -1, -1):
            last = i == len(children) - 1
            stack.append((children[i], tail + ("└── " if last else "├── "), tail + ("    " if last else "│   ")))
    return lines


def render_totals(totals: dict[str, Any]) -> str:
    spans, errors = totals.get("spans", 0), totals.get("errors", 0)
    parts = [
        f"{spans} span{'s' if spans != 1 else ''}",
        f"{errors} error{'s' if errors != 1 else ''}",
        fmt_duration(totals.get("duration_ns")),
    ]
    tokens = fmt_tokens(
        totals.get("input_tokens", 0), totals.get("output_tokens", 0), totals.get("cache_read_tokens", 0)
    )
    if tokens:
        parts.append(tokens + " tokens")
    parts.append(fmt_usd(totals.get("cost_usd")) if totals.get("cost_usd") is not None else "unpriced")
    return "total: " + ", ".join(parts)


def render_trace(trace: dict[str, Any]) -> str:
    """The span tree of one trace and a totals line."""
    lines = [*render_tree(trace.get("tree") or []), render_totals(trace.get("totals") or {})]
    n_logs = sum(len(s.get("logs") or []) for s in trace.get("spans") or []) + len(trace.get("logs") or [])
    if n_logs:  # GenAI log events (prompts, completions): pipeline/query/logs.py
        lines.append(f"{n_logs} log event(s) with this trace's spans: --json lists them under each span's `logs`")
    lines.extend(render_scores(trace.get("scores") or []))
    return "\n".join(lines)


def render_scores(scores: list[dict[str, Any]]) -> list[str]:
    """Lines for a trace's scores (pipeline/query/scores.py): name, value, source, span, comment."""
    if not scores:
        return []
    out = [f"scores ({len(scores)}):"]
    for s in scores:
        v = s.get("value")
        value = f"{v:.4g}" if isinstance(v, float) else str(v)
        span = f" span {s['span_id']}" if s.get("span_id") else ""
        comment = f"  {s['comment'][:80]!r}" if s.get("comment") else ""
        out.append(f"  {s['name']} = {value}  [{s['source']}]{span}{comment}")
    return out


def render_quality(rows: list[dict[str, Any]], by: str) -> str:
    """The cost-versus-quality table of `tracepipe quality`."""
    if not rows:
        return f"no GenAI traces in this window (by {by})"
    header = [by.upper(), "TRACES", "CALLS", "COST", "COST/TRACE", "SCORED", "MEAN SCORE"]
    body = [
        [
            r.get("group") or "(none)",
            str(r["traces"]),
            str(r["calls"]),
            fmt_usd(r.get("cost_usd")),
            fmt_usd(r.get("cost_per_trace_usd")),
            str(r["scored_traces"]),
            "-" if r.get("mean_score") is None else f"{r['mean_score']:.3f}",
        ]
        for r in rows
    ]
    return _table(header, body, {1, 2, 3, 4, 5, 6})


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), *(line(r) for r in rows)]).rstrip()


def render_trace_list(result: dict[str, Any] | None) -> str:
    """One line per trace summary, and how to get the next page."""
    traces = (result or {}).get("traces") or []
    if not traces:
        return "no traces"
    header = ["TRACE ID", "START (UTC)", "ROOT", "SERVICE", "DURATION", "SPANS", "ERR", "TOKENS", "COST", "USER"]
    rows = [
        [
            t["trace_id"],
            _when(t.get("start_ns")),
            t.get("root_name") or "-",
            t.get("root_service") or "-",
            fmt_duration(t.get("duration_ns")),
            str(t.get("spans", 0)),
            str(t.get("errors", 0)),
            str(t.get("input_tokens", 0) + t.get("output_tokens", 0)),
            fmt_usd(t.get("cost_usd")),
            t.get("user_id") or "-",
        ]
        for t in traces
    ]
    text = _table(header, rows, right={4, 5, 6, 7, 8})
    if result and result.get("next"):
        text += f"\nmore traces: next page cursor {result['next']}"
    return text


def render_cost(rows: list[dict[str, Any]] | None, by: str) -> str:
    """The cost-by table: group, cost, tokens, calls, p50/p95 latency."""
    rows = rows or []
    if not rows:
        return f"no GenAI spend recorded (by {by})"
    latency = "TRACE" if by in ("user", "feature", "tenant") else ""
    header = [
        by.upper(),
        "COST",
        "INPUT TOK",
        "OUTPUT TOK",
        "CALLS",
        f"{latency} P50".strip(),
        f"{latency} P95".strip(),
    ]
    body = []
    for r in rows:
        body.append(
            [
                r.get("group") or "(none)",
                fmt_usd(r.get("cost_usd")),
                str(r.get("input_tokens", 0)),
                str(r.get("output_tokens", 0)),
                str(r.get("calls", 0)),
                fmt_duration(r["p50_ms"] * 1e6) if r.get("p50_ms") is not None else "-",
                fmt_duration(r["p95_ms"] * 1e6) if r.get("p95_ms") is not None else "-",
            ]
        )
    priced = [r["cost_usd"] for r in rows if r.get("cost_usd") is not None]
    total = [
        "TOTAL",
        fmt_usd(sum(priced)) if priced else "-",
        str(sum(r.get("input_tokens", 0) for r in rows)),
        str(sum(r.get("output_tokens", 0) for r in rows)),
        str(sum(r.get("calls", 0) for r in rows)),
        "",
        "",
    ]
    return _table(header, [*body, total], right={1, 2, 3, 4, 5, 6})
