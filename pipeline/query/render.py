"""Text renderings for the CLI, from the same dicts the API returns as JSON.

     OFFSET  TIMELINE              SPAN
         +0  ████████████████████  rag-pipeline (2.5s, $0.0113)
         +0  ███████████████·····  ├── retrieval (1.8s, $0.00002)
         +0  ██··················  │   ├── embedding (200ms, text-embedding-3-small, 1000 in, $0.00002)
      +10ms  ·█████████████······  │   └── vector_search (1.58s)
      +1.8s  ··············██████  └── synthesis (690ms, gpt-4o, 2000 in / 500 out, $0.0113) ✗ ERROR: ...
    total: 5 spans, 1 error, 2.5s, 3000 in / 500 out tokens, $0.0113

OFFSET is the span's start after the trace's first start, the bar its place in the trace's
time. Colours, widths and money come from pipeline.query.term.

A node's line shows its duration, then its own model, tokens and cost when it is an LLM
call; a node with children shows its subtree's cost instead when it has none of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.query.term import PLAIN, Col, Term, dim_dash, error_style, fit_line, money_style, table, total_line
from pipeline.query.term import fmt_usd as _term_usd


def fmt_usd(value: float | None) -> str:
    """$0.025, $1.50, $0.00002; "-" when unpriced (pipeline.query.term.fmt_usd, the one money format)."""
    return _term_usd(value)


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


def _node_line(node: dict[str, Any], term: Term = PLAIN) -> str:
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
    elif node.get("model"):
        details.append("unpriced")
    name = str(node.get("name", "?"))
    line = f"{term.style(name, 'bold') if node.get('model') else name} ({', '.join(details)})"
    if node.get("status_code") == "Error":
        msg = node.get("status_message") or ""
        line += term.style(" ✗ ERROR" + (f": {msg}" if msg else ""), "red")
    if node.get("orphan"):
        line += term.style(" [parent not stored]", "dim")
    return line


def _walk(roots: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(node, tree prefix) in display order; iterative for deep traces."""
    out: list[tuple[dict[str, Any], str]] = []
    # (node, prefix for its own line, prefix for its children's lines)
    stack: list[tuple[dict[str, Any], str, str]] = [(r, "", "") for r in reversed(roots)]
    while stack:
        node, head, tail = stack.pop()
        out.append((node, head))
        children = node.get("children") or []
        for i in range(len(children) - 1, -1, -1):
            last = i == len(children) - 1
            stack.append((children[i], tail + ("└── " if last else "├── "), tail + ("    " if last else "│   ")))
    return out


def render_tree(roots: list[dict[str, Any]]) -> list[str]:
    """The span tree alone, one plain line per span."""
    return [head + _node_line(node) for node, head in _walk(roots)]


def _offset(ns: float) -> str:
    return "+0" if ns <= 0 else "+" + fmt_duration(ns)


def _bar(start: float, dur: float, t0: float, total: float, cells: int) -> str:
    """A span's place in the trace's time: `cells` characters, at least one filled."""
    if total <= 0:
        return "█" * cells
    a = int((start - t0) / total * cells)
    b = int(-(-(start - t0 + max(dur, 0)) * cells // total))  # ceil
    a = min(max(a, 0), cells - 1)
    b = min(max(b, a + 1), cells)
    return "·" * a + "█" * (b - a) + "·" * (cells - b)


def render_waterfall(roots: list[dict[str, Any]], term: Term = PLAIN) -> list[str]:
    """The span tree with a start offset column (from the trace's first start) and a bar."""
    walked = _walk(roots)
    if not walked:
        return []
    starts = [float(n.get("start_ns") or 0) for n, _ in walked]
    ends = [float(n.get("start_ns") or 0) + float(n.get("duration_ns") or 0) for n, _ in walked]
    t0, total = min(starts), max(ends) - min(starts)
    offsets = [_offset(s - t0) for s in starts]
    ow = max(len("OFFSET"), *(len(o) for o in offsets))
    cells = 20 if term.width is None else max(8, min(30, term.width // 6))
    lines = [term.style("OFFSET".rjust(ow) + "  " + "TIMELINE".ljust(cells) + "  SPAN", "bold")]
    for (node, head), off, start in zip(walked, offsets, starts, strict=True):
        bar = _bar(start, float(node.get("duration_ns") or 0), t0, total, cells)
        colour = "red" if node.get("status_code") == "Error" else ("cyan" if node.get("model") else "blue")
        prefix = off.rjust(ow) + "  " + term.style(bar, colour) + "  "
        text = head + _node_line(node, term)
        if term.width is not None:
            # The offset and bar are never cut; the tree line is, at its end (then without styles,
            # so that no escape sequence is cut in half).
            room = max(term.width - ow - cells - 4, 8)
            plain = head + _node_line(node, PLAIN)
            if len(plain) > room:
                text = fit_line(plain, Term(width=room))
        lines.append(prefix + text)
    return lines


def _unpriced_calls(roots: list[dict[str, Any]]) -> int:
    return sum(1 for n, _ in _walk(roots) if n.get("model") and n.get("cost_usd") is None)


def render_totals(totals: dict[str, Any], unpriced: int = 0) -> str:
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
    parts.append(total_line(totals.get("cost_usd"), unpriced, prefix="").strip())
    return "total: " + ", ".join(parts)


def render_trace(trace: dict[str, Any], term: Term = PLAIN, *, waterfall: bool = True) -> str:
    """The span tree of one trace (with start offsets and timeline bars unless `waterfall` is
    False) and a totals line."""
    roots = trace.get("tree") or []
    tree = render_waterfall(roots, term) if waterfall else render_tree(roots)
    totals = render_totals(trace.get("totals") or {}, _unpriced_calls(roots))
    lines = [*tree, totals]
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


def _table(header: list[str], rows: list[list[str]], right: set[int], term: Term = PLAIN) -> str:
    """A plain table (kept for callers of the earlier helper): right-aligned columns never cut."""
    cols = [Col(h, kind="num" if i in right else "text") for i, h in enumerate(header)]
    return table(cols, rows, term)


def render_trace_list(result: dict[str, Any] | None, term: Term = PLAIN) -> str:
    """One line per trace summary, a total line, and how to get the next page."""
    traces = (result or {}).get("traces") or []
    if not traces:
        return "no traces"
    cols = [
        Col("TRACE ID", kind="key"),
        Col("START (UTC)", min_width=10, drop=3),
        Col("ROOT", min_width=6),
        Col("SERVICE", min_width=6, drop=1),
        Col("DURATION", kind="num"),
        Col("SPANS", kind="num", drop=4),
        Col("ERR", kind="num", drop=5, style=error_style),
        Col("TOKENS", kind="num", drop=2),
        Col("COST", kind="num", style=money_style),
        Col("USER", cut="middle", drop=0, style=dim_dash),
    ]
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
    text = table(cols, rows, term)
    priced = [t["cost_usd"] for t in traces if t.get("cost_usd") is not None]
    unpriced = sum(1 for t in traces if t.get("cost_usd") is None and t.get("llm_calls", 0))
    n = len(traces)
    text += "\n" + total_line(
        sum(priced) if priced else None, unpriced, "trace", prefix=f"{n} trace{'s' if n != 1 else ''}, total"
    )
    if result and result.get("next"):
        text += "\n" + fit_line(f"more traces: next page cursor {result['next']}", term)
    return text


def render_cost(rows: list[dict[str, Any]] | None, by: str, term: Term = PLAIN) -> str:
    """The cost-by table: group, cost, tokens, calls, p50/p95 latency; a TOTAL row and a total
    line naming the unpriced calls left out of it."""
    rows = rows or []
    if not rows:
        return f"no GenAI spend recorded (by {by})"
    latency = "TRACE" if by in ("user", "feature", "tenant") else ""
    cols = [
        Col(by.upper(), cut="middle", min_width=8, style=dim_dash),
        Col("COST", kind="num", style=money_style),
        Col("INPUT TOK", kind="num", drop=3),
        Col("OUTPUT TOK", kind="num", drop=2),
        Col("CALLS", kind="num"),
        Col("UNPRICED", kind="num", drop=4, style=error_style),
        Col(f"{latency} P50".strip(), kind="num", drop=1),
        Col(f"{latency} P95".strip(), kind="num", drop=0),
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
                str(r.get("unpriced_calls", 0)),
                fmt_duration(r["p50_ms"] * 1e6) if r.get("p50_ms") is not None else "-",
                fmt_duration(r["p95_ms"] * 1e6) if r.get("p95_ms") is not None else "-",
            ]
        )
    priced = [r["cost_usd"] for r in rows if r.get("cost_usd") is not None]
    unpriced = sum(int(r.get("unpriced_calls") or 0) for r in rows)
    total = [
        "TOTAL",
        fmt_usd(sum(priced)) if priced else "-",
        str(sum(r.get("input_tokens", 0) for r in rows)),
        str(sum(r.get("output_tokens", 0) for r in rows)),
        str(sum(r.get("calls", 0) for r in rows)),
        str(unpriced),
        "",
        "",
    ]
    text = table(cols, [*body, total], term, total_rows=1)
    return text + "\n" + total_line(sum(priced) if priced else None, unpriced)
