"""Scores and feedback linked to traces: the `tracepipe_scores` table, its rows, and cost vs quality.

A score names a trace (and optionally one span), has a `name` ("helpfulness", "thumbs",
"quality.similarity"), a numeric value (booleans are stored as 1/0) or a categorical one
(a short string), an optional comment and a `source`: api, user, evaluator or quality. It is
stored in ClickHouse next to the spans (`<database>.tracepipe_scores`, created by the clickhouse
sink's schema code and, if the sink has not run yet, by the first insert through a client: once
per client and database, and again if an insert finds the table gone), under the tenant of the
token that sent it (never a tenant the client claims).

- `validate_score(body)`: a clean `Score` or ValueError naming the bad field.
- `insert_score(queries, score, tenant)`: stores one score, returns it with its id and time.
- `insert_scores(queries, scores)`: stores the scores a component derived (the quality processor's
  similarities, pipeline/quality/score_writer.py) in one insert, with ids derived from trace, span and name.
- `scores_for(queries, trace_id, tenant)`: the scores of one trace (joined onto `get_trace`).
- `quality_by(queries, by, name, since, tenant)`: cost versus mean numeric score per model, feature
  or prompt version (`gen_ai.prompt.version`). Cost is the LLM spend of the group's spans in the
  traces started within `since`; a trace's scores count for every group it has spans in.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

from clickhouse_connect.driver.exceptions import DatabaseError

SCORES_TABLE = "tracepipe_scores"
SOURCES = ("api", "user", "evaluator", "quality")
QUALITY_DIMENSIONS = ("model", "feature", "prompt_version", "service")
MAX_NAME = 200
MAX_CATEGORY = 200
MAX_COMMENT = 4000
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")
_FIELDS = {"trace_id", "span_id", "name", "value", "comment", "source"}

_GROUP_EXPR = {
    "model": "if(RequestModel != '', RequestModel, ResponseModel)",
    "feature": "toString(Feature)",
    "prompt_version": "SpanAttributes['gen_ai.prompt.version']",
    "service": "toString(ServiceName)",
}


def scores_schema_statements(database: str, ttl: str = "") -> list[str]:
    """DDL of the scores table (`ttl`: a TTL expression on toDateTime(Timestamp), or "")."""
    ttl_clause = f"TTL {ttl}\n" if ttl else ""
    return [
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{SCORES_TABLE}` (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TenantId LowCardinality(String),
    ScoreId String,
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Name LowCardinality(String),
    DataType LowCardinality(String),
    Value Nullable(Float64),
    StringValue String,
    Comment String CODEC(ZSTD(1)),
    Source LowCardinality(String)
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (TenantId, TraceId, Timestamp)
{ttl_clause}SETTINGS index_granularity = 8192"""
    ]


@dataclass(frozen=True)
class Score:
    trace_id: str
    span_id: str
    name: str
    data_type: str  # numeric | boolean | categorical
    value: float | None
    string_value: str
    comment: str
    source: str


def validate_score(body: Any) -> Score:
    """The score a POST body describes; ValueError naming the field otherwise."""
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (expected {', '.join(sorted(_FIELDS))})")
    tid = body.get("trace_id")
    if not isinstance(tid, str) or not _TRACE_ID.match(tid.lower()):
        raise ValueError("trace_id: expected 32 hex characters")
    sid = body.get("span_id") or ""
    if not isinstance(sid, str) or (sid and not _SPAN_ID.match(sid.lower())):
        raise ValueError("span_id: expected 16 hex characters")
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise ValueError(f"name: expected 1-{MAX_NAME} characters of letters, digits, _ . : / -")
    value = body.get("value")
    if isinstance(value, bool):
        data_type, number, text = "boolean", 1.0 if value else 0.0, ""
    elif isinstance(value, int | float):
        if not math.isfinite(float(value)):
            raise ValueError("value: must be a finite number")
        data_type, number, text = "numeric", float(value), ""
    elif isinstance(value, str) and value and len(value) <= MAX_CATEGORY:
        data_type, number, text = "categorical", None, value
    else:
        raise ValueError(f"value: expected a number, a boolean or a category of 1-{MAX_CATEGORY} characters")
    comment = body.get("comment") or ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise ValueError(f"comment: expected a string of at most {MAX_COMMENT} characters")
    source = body.get("source") or "api"
    if source not in SOURCES:
        raise ValueError(f"source: must be one of {', '.join(SOURCES)}")
    return Score(tid.lower(), sid.lower(), name, data_type, number, text, comment, source)


def _row_dict(r: tuple[Any, ...]) -> dict[str, Any]:
    ts, score_id, tid, sid, name, data_type, value, text, comment, source = r
    return {
        "id": score_id,
        "timestamp_ns": int(ts),
        "trace_id": tid,
        "span_id": sid or None,
        "name": name,
        "data_type": data_type,
        "value": text if data_type == "categorical" else value,
        "comment": comment or None,
        "source": source,
    }


COLUMNS = ["Timestamp", "TenantId", "ScoreId", "TraceId", "SpanId", "Name", "DataType", "Value", "StringValue",
           "Comment", "Source"]


_UNKNOWN_TABLE = 60
# The databases each client has created the scores table in (its DDL runs once per client and database).
_TABLE_CREATED: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()
_TABLE_LOCK = threading.Lock()


def _ensure_table(client: Any, database: str, *, again: bool = False) -> None:
    """CREATE TABLE IF NOT EXISTS, the first time this client writes to `database` (or `again`)."""
    with _TABLE_LOCK:
        if not again and database in _TABLE_CREATED.get(client, ()):
            return
    for stmt in scores_schema_statements(database):
        client.command(stmt)
    with _TABLE_LOCK:
        _TABLE_CREATED.setdefault(client, set()).add(database)


def _insert(client: Any, database: str, rows: list[list[Any]], token: str | None = None) -> None:
    _ensure_table(client, database)
    settings = {"insert_deduplicate": 1, "insert_deduplication_token": token} if token else None
    table = f"`{database}`.`{SCORES_TABLE}`"
    try:
        client.insert(table, rows, column_names=COLUMNS, settings=settings)
    except DatabaseError as e:
        if getattr(e, "code", None) != _UNKNOWN_TABLE and "Code: 60." not in str(e):
            raise
        _ensure_table(client, database, again=True)  # dropped since this client created it
        client.insert(table, rows, column_names=COLUMNS, settings=settings)


def _row(score: Score, tenant: str, score_id: str, now_ns: int) -> list[Any]:
    ts = datetime.fromtimestamp(now_ns / 1e9, tz=UTC)
    return [ts, tenant, score_id, score.trace_id, score.span_id, score.name, score.data_type, score.value,
            score.string_value, score.comment, score.source]


async def insert_score(queries: Any, score: Score, tenant: str) -> dict[str, Any]:
    now = time.time_ns()
    score_id = uuid.uuid4().hex
    await queries.run_on_client(_insert, queries.database, [_row(score, tenant, score_id, now)])
    return _row_dict((now, score_id, score.trace_id, score.span_id, score.name, score.data_type, score.value,
                      score.string_value, score.comment, score.source)) | {"tenant": tenant}


def derived_score_id(score: Score) -> str:
    """The id of a score a pipeline component derives (source quality): one per trace, span and name,
    so the same result computed again (after a restart) names the same score."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tracepipe:{score.source}:{score.trace_id}:{score.span_id}:{score.name}").hex


async def insert_scores(queries: Any, scores: list[tuple[Score, str]]) -> None:
    """Store derived scores ((score, tenant) pairs) in one insert; ids from `derived_score_id`, and
    the insert deduplicated by them, so the same rows written twice are stored once."""
    if not scores:
        return
    now = time.time_ns()
    rows = [_row(score, tenant, derived_score_id(score), now) for score, tenant in scores]
    token = "scores-" + uuid.uuid5(uuid.NAMESPACE_URL, ",".join(sorted(r[2] for r in rows))).hex
    await queries.run_on_client(_insert, queries.database, rows, token)


async def scores_for(queries: Any, trace_id: str, tenant: str | None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"tid": trace_id}
    only = ""
    if tenant is not None:
        params["tenant"] = tenant
        only = " AND TenantId = {tenant:String}"
    rows = await queries._query(
        "SELECT toUnixTimestamp64Nano(Timestamp), ScoreId, TraceId, SpanId, Name, DataType, Value, StringValue,"
        f" Comment, Source FROM `{queries.database}`.`{SCORES_TABLE}` WHERE TraceId = {{tid:String}}{only}"
        " ORDER BY Timestamp, ScoreId",
        params,
    )
    return [_row_dict(r) for r in rows]


async def quality_by(
    queries: Any, by: str = "model", name: str | None = None, since: str | None = "7d", *, tenant: str | None = None
) -> list[dict[str, Any]]:
    if by not in QUALITY_DIMENSIONS:
        raise ValueError(f"by: must be one of {', '.join(QUALITY_DIMENSIONS)}")
    cutoff = queries._cutoff(since)
    params: dict[str, Any] = {"cutoff": cutoff if cutoff is not None else 0}
    span_tenant = score_tenant = ""
    if tenant is not None:
        params["tenant"] = tenant
        span_tenant = score_tenant = " AND TenantId = {tenant:String}"
    score_name = ""
    if name is not None:
        params["name"] = name
        score_name = " AND Name = {name:String}"
    sql = f"""
SELECT Grp, count() AS Traces, sum(Cost) AS TotalCost, sum(Calls), countIf(N > 0), sum(S), sum(N)
FROM (
    SELECT t.TraceId AS TraceId, t.Grp AS Grp, t.Cost AS Cost, t.Calls AS Calls, s.S AS S, s.N AS N
    FROM (
        SELECT TraceId, {_GROUP_EXPR[by]} AS Grp, sum(CostUsd) AS Cost, count() AS Calls
        FROM {queries.spans_table}
        WHERE (RequestModel != '' OR ResponseModel != '')
            AND Timestamp >= fromUnixTimestamp64Nano({{cutoff:Int64}}){span_tenant}
        GROUP BY TraceId, Grp
    ) AS t
    LEFT JOIN (
        SELECT TraceId, sum(Value) AS S, count() AS N
        FROM `{queries.database}`.`{SCORES_TABLE}`
        WHERE Value IS NOT NULL{score_name}{score_tenant}
        GROUP BY TraceId
    ) AS s ON t.TraceId = s.TraceId
)
GROUP BY Grp
ORDER BY TotalCost DESC NULLS LAST, Traces DESC, Grp"""
    rows = await queries._query(sql, params)
    out = []
    for grp, traces, cost, calls, scored, total, n in rows:
        out.append(
            {
                "group": grp or None,
                "traces": int(traces),
                "calls": int(calls),
                "cost_usd": cost,
                "cost_per_trace_usd": (cost / traces) if cost is not None and traces else None,
                "scored_traces": int(scored),
                "scores": int(n),
                "mean_score": (float(total) / n) if n else None,
            }
        )
    return out
