"""Spend over time: the traces started in a window, bucketed per hour or day, with their cost,
tokens, LLM calls and errors (the cost overview's time chart, GET /api/analytics/spend).

Trace-level like `cost_by(by="user")`: a trace counts in the bucket of its first span's start, and
its cost is the NULL-aware sum of its spans (unpriced calls add nothing; a bucket where nothing was
priced has cost None, never 0).
"""

from __future__ import annotations

from typing import Any

from pipeline.query.sessions import INTERVALS, spend_series
from pipeline.query.traces import TraceQueries


async def spend_over_time(q: TraceQueries, *, since: str | None = "7d", interval: str = "day",
                          tenant: str | None = None) -> dict[str, Any]:
    if interval not in INTERVALS:
        raise ValueError(f"interval: must be one of {', '.join(INTERVALS)}")
    cutoff = q._cutoff(since)
    params: dict[str, Any] = {"cutoff": cutoff if cutoff is not None else 0}
    candidates = ["Start >= fromUnixTimestamp64Nano({cutoff:Int64})"] if cutoff is not None else []
    rows_of = having_tenant = ""
    if tenant is not None:
        params["tenant"] = tenant
        candidates.append("TenantId = {tenant:String}")
        rows_of = " AND TenantId = {tenant:String}"  # after the candidates' WHERE (never empty here)
        having_tenant = " AND max(TenantId) = {tenant:String}"
    sql = f"""
SELECT toUnixTimestamp64Nano(toDateTime64({INTERVALS[interval]}(fromUnixTimestamp64Nano(StartNs)), 9)) AS Bucket,
    count() AS Traces, sum(Cost), sum(InTok), sum(OutTok), sum(Calls), sum(Errors)
FROM (
    SELECT TraceId, toUnixTimestamp64Nano(min(Start)) AS StartNs, sum(CostUsd) AS Cost,
        sum(InputTokens) AS InTok, sum(OutputTokens) AS OutTok, sum(LlmCalls) AS Calls, sum(ErrorCount) AS Errors
    FROM {q.summary_table}
    {q._candidates(candidates)}{rows_of}
    GROUP BY TraceId
    HAVING StartNs >= {{cutoff:Int64}}{having_tenant}
)
GROUP BY Bucket
ORDER BY Bucket"""
    rows = await q._query(sql, params)
    series, totals = spend_series(rows)
    return {"interval": interval, "totals": totals, "series": series}
