"""Conversations and users, read from the clickhouse sink's typed columns.

A session (a conversation) is the value of `session.id`, else `gen_ai.conversation.id`
(typed columns SessionId, ConversationId); its turns are the traces with a span in it,
oldest first. A user's figures use the trace-level attribution of the summary table (the
user set anywhere in a trace owns its cost, as `cost --by user`).

- `list_sessions(q, ...)`: sessions by last activity, newest first: turns, cost, tokens,
  calls, errors, first/last activity, users.
- `get_session(q, id)`: the session's turns in order (trace id, start, latency, cost,
  tokens, calls, errors, root span, models, user) and totals; None when unknown.
- `get_user(q, id, ...)`: a user's totals, spend per hour or day, and recent traces.

Every function takes `tenant`: when not None only rows with `TenantId = tenant` count.
Values from users reach SQL only as bound parameters.
"""

from __future__ import annotations

from typing import Any

from pipeline.query.traces import MAX_LIMIT, MODEL_EXPR, SESSION_EXPR, TraceQueries, _none_if_empty

INTERVALS = {"hour": "toStartOfHour", "day": "toStartOfDay"}


def spend_series(rows: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of (bucket ns, traces, cost, input tokens, output tokens, calls, errors) -> the series
    and its totals (cost None when nothing in it was priced). Shared by a user's and the tenant's
    spend over time (pipeline/query/spend.py)."""
    series = [
        {
            "start_ns": int(bucket),
            "traces": int(traces),
            "cost_usd": cost,
            "input_tokens": int(in_tok),
            "output_tokens": int(out_tok),
            "llm_calls": int(calls),
            "errors": int(errors),
        }
        for bucket, traces, cost, in_tok, out_tok, calls, errors in rows
    ]
    priced = [s["cost_usd"] for s in series if s["cost_usd"] is not None]
    totals = {
        "traces": sum(s["traces"] for s in series),
        "cost_usd": sum(priced) if priced else None,
        "input_tokens": sum(s["input_tokens"] for s in series),
        "output_tokens": sum(s["output_tokens"] for s in series),
        "llm_calls": sum(s["llm_calls"] for s in series),
        "errors": sum(s["errors"] for s in series),
    }
    return series, totals

# Per trace, from the span rows (typed columns only).
_TURN_COLUMNS = f"""TraceId,
    toUnixTimestamp64Nano(min(Timestamp)) AS StartNs,
    toUnixTimestamp64Nano(max(addNanoseconds(Timestamp, toInt64(Duration)))) AS EndNs,
    sum(CostUsd) AS Cost, sum(InputTokens) AS InTok, sum(OutputTokens) AS OutTok,
    countIf(RequestModel != '' OR ResponseModel != '') AS Calls, countIf(StatusCode = 'Error') AS Errors,
    max(if(ParentSpanId = '', toString(SpanName), '')) AS RootName,
    groupUniqArrayIf(toString({MODEL_EXPR}), RequestModel != '' OR ResponseModel != '') AS Models,
    max(UserId) AS TraceUser, max({SESSION_EXPR}) AS Sess"""


def _tenant_clause(tenant: str | None, params: dict[str, Any]) -> str:
    if tenant is None:
        return ""
    params["tenant"] = tenant
    return " AND TenantId = {tenant:String}"


def _check_limit(limit: int) -> int:
    limit = int(limit)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}")
    return limit


async def list_sessions(
    q: TraceQueries,
    *,
    user: str | None = None,
    since: str | None = "7d",
    limit: int = 20,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Sessions newest activity first, with their totals."""
    limit = _check_limit(limit)
    cutoff = q._cutoff(since)
    params: dict[str, Any] = {"cutoff": cutoff if cutoff is not None else 0, "limit": limit}
    where = f"({SESSION_EXPR}) != '' AND Timestamp >= fromUnixTimestamp64Nano({{cutoff:Int64}})"
    where += _tenant_clause(tenant, params)
    having = ""
    if user:
        params["user"] = user
        having = "HAVING has(Users, {user:String})"
    else:
        # Without a user filter the page's sessions are known from the session spans alone (the most
        # recently ended first), so only their traces are aggregated: on a busy week this is what keeps
        # the page fast. With the context processor (shipped chains) every span of a turn carries its
        # session, so this is the same order as the turns' ends below.
        pick = f"""
SELECT Sess FROM (
    SELECT {SESSION_EXPR} AS Sess, max(addNanoseconds(Timestamp, toInt64(Duration))) AS LastEnd
    FROM {q.spans_table} WHERE {where} GROUP BY Sess
) ORDER BY LastEnd DESC, Sess LIMIT {{limit:UInt32}}"""
        params["page"] = [r[0] for r in await q._query(pick, params)]
        if not params["page"]:
            return {"sessions": []}
        where += f" AND ({SESSION_EXPR}) IN {{page:Array(String)}}"
    sql = f"""
SELECT Sess, count() AS Turns, sum(Cost), sum(InTok), sum(OutTok), sum(Calls), sum(Errors),
    min(StartNs), max(EndNs), groupUniqArrayIf(TraceUser, TraceUser != '') AS Users
FROM (
    SELECT {_TURN_COLUMNS}
    FROM {q.spans_table}
    WHERE TraceId IN (SELECT TraceId FROM {q.spans_table} WHERE {where})
    GROUP BY TraceId
)
WHERE Sess != ''
GROUP BY Sess
{having}
ORDER BY max(EndNs) DESC, Sess
LIMIT {{limit:UInt32}}"""
    rows = await q._query(sql, params)
    sessions = [
        {
            "session_id": sess,
            "turns": int(turns),
            "cost_usd": cost,
            "input_tokens": int(in_tok),
            "output_tokens": int(out_tok),
            "llm_calls": int(calls),
            "errors": int(errors),
            "first_ns": int(first),
            "last_ns": int(last),
            "users": sorted(users),
        }
        for sess, turns, cost, in_tok, out_tok, calls, errors, first, last, users in rows
    ]
    return {"sessions": sessions}


async def get_session(q: TraceQueries, session_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
    """The session's turns (traces) oldest first, each with its figures, and the totals."""
    if not session_id:
        raise ValueError("session id: must not be empty")
    params: dict[str, Any] = {"sid": session_id, "max_turns": 10_000}
    inner = "(SessionId = {sid:String} OR ConversationId = {sid:String})" + _tenant_clause(tenant, params)
    sql = f"""
SELECT {_TURN_COLUMNS}
FROM {q.spans_table}
WHERE TraceId IN (SELECT TraceId FROM {q.spans_table} WHERE {inner})
GROUP BY TraceId
ORDER BY StartNs, TraceId
LIMIT {{max_turns:UInt32}}"""
    rows = await q._query(sql, params)
    if not rows:
        return None
    turns = []
    for i, (tid, start, end, cost, in_tok, out_tok, calls, errors, root, models, user, _sess) in enumerate(rows):
        turns.append(
            {
                "turn": i + 1,
                "trace_id": tid,
                "start_ns": int(start),
                "duration_ns": max(0, int(end) - int(start)),
                "cost_usd": cost,
                "input_tokens": int(in_tok),
                "output_tokens": int(out_tok),
                "llm_calls": int(calls),
                "errors": int(errors),
                "root_name": _none_if_empty(root),
                "models": sorted(models),
                "user_id": _none_if_empty(user),
            }
        )
    priced = [t["cost_usd"] for t in turns if t["cost_usd"] is not None]
    totals = {
        "turns": len(turns),
        "cost_usd": sum(priced) if priced else None,
        "input_tokens": sum(t["input_tokens"] for t in turns),
        "output_tokens": sum(t["output_tokens"] for t in turns),
        "llm_calls": sum(t["llm_calls"] for t in turns),
        "errors": sum(t["errors"] for t in turns),
        "duration_ns": sum(t["duration_ns"] for t in turns),
        "first_ns": turns[0]["start_ns"],
        "last_ns": max(t["start_ns"] + t["duration_ns"] for t in turns),
    }
    users = sorted({t["user_id"] for t in turns if t["user_id"]})
    return {"session_id": session_id, "users": users, "totals": totals, "turns": turns}


async def get_user(
    q: TraceQueries,
    user_id: str,
    *,
    since: str | None = "30d",
    interval: str = "day",
    limit: int = 20,
    tenant: str | None = None,
) -> dict[str, Any] | None:
    """A user's totals, spend per `interval` (hour|day) and most recent traces; None when unknown."""
    if not user_id:
        raise ValueError("user id: must not be empty")
    if interval not in INTERVALS:
        raise ValueError(f"interval: must be one of {', '.join(INTERVALS)}")
    limit = _check_limit(limit)
    cutoff = q._cutoff(since)
    params: dict[str, Any] = {"user": user_id, "cutoff": cutoff if cutoff is not None else 0}
    cand = "UserId = {user:String}" + _tenant_clause(tenant, params)
    sql = f"""
SELECT toUnixTimestamp64Nano(toDateTime64({INTERVALS[interval]}(fromUnixTimestamp64Nano(StartNs)), 9)) AS Bucket,
    count() AS Traces, sum(Cost), sum(InTok), sum(OutTok), sum(Calls), sum(Errors)
FROM (
    SELECT TraceId, toUnixTimestamp64Nano(min(Start)) AS StartNs, sum(CostUsd) AS Cost,
        sum(InputTokens) AS InTok, sum(OutputTokens) AS OutTok, sum(LlmCalls) AS Calls, sum(ErrorCount) AS Errors,
        max(UserId) AS TraceUser
    FROM {q.summary_table}
    WHERE TraceId IN (SELECT TraceId FROM {q.summary_table} WHERE {cand})
    GROUP BY TraceId
    HAVING TraceUser = {{user:String}} AND StartNs >= {{cutoff:Int64}}
)
GROUP BY Bucket
ORDER BY Bucket"""
    rows = await q._query(sql, params)
    if not rows:
        return None
    series, totals = spend_series(rows)
    recent = await q.list_traces(user=user_id, since=since, limit=limit, tenant=tenant)
    return {"user_id": user_id, "interval": interval, "totals": totals, "series": series, "traces": recent["traces"]}
