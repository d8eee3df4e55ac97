"""Text rendering of sessions and users for the CLI (the same JSON the API returns)."""

from __future__ import annotations

from typing import Any

from pipeline.query.render import _when, fmt_duration, fmt_usd
from pipeline.query.term import PLAIN, Col, Term, dim_dash, error_style, fit_line, money_style, table, total_line


def _unpriced_turns(items: list[dict[str, Any]]) -> int:
    return sum(1 for t in items if t.get("cost_usd") is None and t.get("llm_calls", 0))


def render_session_list(result: dict[str, Any] | None, term: Term = PLAIN) -> str:
    sessions = (result or {}).get("sessions") or []
    if not sessions:
        return "no sessions"
    cols = [
        Col("SESSION", cut="middle", min_width=12),
        Col("LAST (UTC)", min_width=10, drop=2),
        Col("TURNS", kind="num"),
        Col("CALLS", kind="num", drop=3),
        Col("ERR", kind="num", drop=4, style=error_style),
        Col("TOKENS", kind="num", drop=1),
        Col("COST", kind="num", style=money_style),
        Col("USERS", cut="end", drop=0, style=dim_dash),
    ]
    rows = [
        [
            s["session_id"],
            _when(s.get("last_ns")),
            str(s.get("turns", 0)),
            str(s.get("llm_calls", 0)),
            str(s.get("errors", 0)),
            str(s.get("input_tokens", 0) + s.get("output_tokens", 0)),
            fmt_usd(s.get("cost_usd")),
            ",".join(s.get("users") or []) or "-",
        ]
        for s in sessions
    ]
    priced = [s["cost_usd"] for s in sessions if s.get("cost_usd") is not None]
    n = len(sessions)
    footer = total_line(
        sum(priced) if priced else None, _unpriced_turns(sessions), "session",
        prefix=f"{n} session{'s' if n != 1 else ''}, total",
    )  # fmt: skip
    return table(cols, rows, term) + "\n" + footer


def render_session(session: dict[str, Any], term: Term = PLAIN) -> str:
    turns = session.get("turns") or []
    cols = [
        Col("TURN", kind="num"),
        Col("START (UTC)", min_width=10, drop=2),
        Col("TRACE ID", kind="key"),
        Col("ROOT", min_width=6, drop=0),
        Col("LATENCY", kind="num"),
        Col("CALLS", kind="num", drop=3),
        Col("ERR", kind="num", drop=4, style=error_style),
        Col("IN TOK", kind="num", drop=1),
        Col("OUT TOK", kind="num", drop=1),
        Col("COST", kind="num", style=money_style),
    ]
    rows = [
        [
            str(t["turn"]),
            _when(t.get("start_ns")),
            t["trace_id"],
            t.get("root_name") or "-",
            fmt_duration(t.get("duration_ns")),
            str(t.get("llm_calls", 0)),
            str(t.get("errors", 0)),
            str(t.get("input_tokens", 0)),
            str(t.get("output_tokens", 0)),
            fmt_usd(t.get("cost_usd")),
        ]
        for t in turns
    ]
    tot = session.get("totals") or {}
    rows.append(
        [
            "TOTAL", "", f"{tot.get('turns', 0)} turns", "", fmt_duration(tot.get("duration_ns")),
            str(tot.get("llm_calls", 0)), str(tot.get("errors", 0)), str(tot.get("input_tokens", 0)),
            str(tot.get("output_tokens", 0)), fmt_usd(tot.get("cost_usd")),
        ]
    )  # fmt: skip
    users = ", ".join(session.get("users") or []) or "-"
    head = fit_line(f"session {session['session_id']}  users: {users}", term)
    footer = total_line(tot.get("cost_usd"), _unpriced_turns(turns), "turn")
    return head + "\n" + table(cols, rows, term, total_rows=1) + "\n" + footer


def render_user(user: dict[str, Any], term: Term = PLAIN) -> str:
    from pipeline.query.render import render_trace_list

    tot = user.get("totals") or {}
    series = user.get("series") or []
    money = total_line(tot.get("cost_usd"), _unpriced_turns(series), str(user.get("interval", "day")), prefix="")
    lines = [
        fit_line(
            f"user {user['user_id']}: {tot.get('traces', 0)} traces, {tot.get('llm_calls', 0)} LLM calls, "
            f"{tot.get('errors', 0)} errors, {tot.get('input_tokens', 0)} in / {tot.get('output_tokens', 0)} out "
            f"tokens, {money.strip()}",
            term,
        ),
        "",
    ]
    cols = [
        Col(f"{user.get('interval', 'day').upper()} (UTC)", min_width=10),
        Col("TRACES", kind="num"),
        Col("CALLS", kind="num", drop=1),
        Col("TOKENS", kind="num", drop=0),
        Col("COST", kind="num", style=money_style),
    ]
    rows = [
        [
            _when(s.get("start_ns")),
            str(s.get("traces", 0)),
            str(s.get("llm_calls", 0)),
            str(s.get("input_tokens", 0) + s.get("output_tokens", 0)),
            fmt_usd(s.get("cost_usd")),
        ]
        for s in series
    ]
    lines.append(table(cols, rows, term))
    lines += ["", "recent traces:", render_trace_list({"traces": user.get("traces") or []}, term)]
    return "\n".join(lines)

