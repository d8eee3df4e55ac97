"""Text rendering of sessions and users for the CLI (the same JSON the API returns)."""

from __future__ import annotations

from typing import Any

from pipeline.query.render import _table, _when, fmt_duration, fmt_usd


def render_session_list(result: dict[str, Any] | None) -> str:
    sessions = (result or {}).get("sessions") or []
    if not sessions:
        return "no sessions"
    header = ["SESSION", "LAST (UTC)", "TURNS", "CALLS", "ERR", "TOKENS", "COST", "USERS"]
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
    return _table(header, rows, right={2, 3, 4, 5, 6})


def render_session(session: dict[str, Any]) -> str:
    turns = session.get("turns") or []
    header = ["TURN", "START (UTC)", "TRACE ID", "ROOT", "LATENCY", "CALLS", "ERR", "IN TOK", "OUT TOK", "COST"]
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
    head = f"session {session['session_id']}  users: {users}"
    return head + "\n" + _table(header, rows, right={4, 5, 6, 7, 8, 9})


def render_user(user: dict[str, Any]) -> str:
    from pipeline.query.render import render_trace_list

    tot = user.get("totals") or {}
    lines = [
        f"user {user['user_id']}: {tot.get('traces', 0)} traces, {tot.get('llm_calls', 0)} LLM calls, "
        f"{tot.get('errors', 0)} errors, {tot.get('input_tokens', 0)} in / {tot.get('output_tokens', 0)} out tokens, "
        f"{fmt_usd(tot.get('cost_usd'))}",
        "",
    ]
    header = [f"{user.get('interval', 'day').upper()} (UTC)", "TRACES", "CALLS", "TOKENS", "COST"]
    rows = [
        [
            _when(s.get("start_ns")),
            str(s.get("traces", 0)),
            str(s.get("llm_calls", 0)),
            str(s.get("input_tokens", 0) + s.get("output_tokens", 0)),
            fmt_usd(s.get("cost_usd")),
        ]
        for s in user.get("series") or []
    ]
    lines.append(_table(header, rows, right={1, 2, 3, 4}))
    lines += ["", "recent traces:", render_trace_list({"traces": user.get("traces") or []})]
    return "\n".join(lines)
