"""Log records with their spans: the query-time join of `otel_logs` onto a trace view.

`attach_logs(queries, trace)` reads the trace's log records (GenAI events such as
`gen_ai.user.message` / `gen_ai.choice`, and any other log tied to the trace) from the
clickhouse sink's logs table and puts each under its span as `span["logs"]`, oldest first;
records of the trace whose span id is empty or not among the stored spans go to
`trace["logs"]`. Joining at read time means a log event and its span can arrive in either
order. Values were redacted before they were stored (pipeline/logs_store.py).
"""

from __future__ import annotations

from typing import Any

MAX_TRACE_LOGS = 10_000


def _log_dict(r: tuple[Any, ...]) -> dict[str, Any]:
    time_ns, span_id, event, sev_text, sev_num, body, attrs, scope, service = r
    return {
        "time_ns": int(time_ns),
        "span_id": span_id or None,
        "event_name": event or None,
        "severity_text": sev_text or None,
        "severity_number": int(sev_num),
        "body": body,
        "attributes": dict(attrs),
        "scope_name": scope,
        "service_name": service,
    }


async def trace_logs(queries: Any, trace_id: str) -> list[dict[str, Any]]:
    """The trace's log records, oldest first (at most MAX_TRACE_LOGS)."""
    table = f"`{queries.database}`.`{getattr(queries, 'logs_table', 'otel_logs')}`"
    rows = await queries._query(
        "SELECT toUnixTimestamp64Nano(Timestamp), SpanId, EventName, SeverityText, SeverityNumber, Body, "
        f"LogAttributes, ScopeName, ServiceName FROM {table} WHERE TraceId = {{tid:String}} "
        "ORDER BY Timestamp, SpanId LIMIT {max_logs:UInt32}",
        {"tid": trace_id, "max_logs": MAX_TRACE_LOGS},
    )
    return [_log_dict(r) for r in rows]


async def attach_logs(queries: Any, trace: dict[str, Any]) -> dict[str, Any]:
    """`trace` (a get_trace result) with `logs` on each span and the unmatched ones on the trace."""
    logs = await trace_logs(queries, trace["trace_id"])
    by_span: dict[str, list[dict[str, Any]]] = {}
    for s in trace["spans"]:
        s["logs"] = by_span.setdefault(s["span_id"], [])
    unmatched: list[dict[str, Any]] = []
    for rec in logs:
        target = by_span.get(rec["span_id"] or "")
        (target if target is not None else unmatched).append(rec)
    trace["logs"] = unmatched
    return trace
