"""The replay tables next to the spans: `tracepipe_replay_items` (a set's captured calls) and
`tracepipe_replay_results` (one row per item per run).

Both are created by the clickhouse sink's schema code (with the spans' retention) and, if the sink
has not run yet, by the first insert. Every row carries the tenant owning it; every read here is
limited to one tenant. Writes go through `queries.run_on_client` (the query thread), as scores do.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

ITEMS_TABLE = "tracepipe_replay_items"
RESULTS_TABLE = "tracepipe_replay_results"

_ITEM_COLUMNS = [
    "Created", "TenantId", "SetName", "ItemId", "Filters", "TraceId", "SpanId", "Timestamp", "ServiceName",
    "Provider", "Model", "ResponseModel", "Feature", "InputMessages", "OriginalOutput", "InputTokens",
    "OutputTokens", "CacheReadTokens", "CostUsd", "DurationNs",
]  # fmt: skip
_RESULT_COLUMNS = [
    "Timestamp", "TenantId", "SetName", "RunId", "ItemId", "Model", "ResponseModel", "Output", "InputTokens",
    "OutputTokens", "CacheReadTokens", "CostUsd", "DurationNs", "Attempts", "Error", "ExactMatch", "Similarity",
    "TraceId", "SpanId", "SystemPrompt",
]  # fmt: skip


def replay_schema_statements(database: str, ttl: str = "") -> list[str]:
    """DDL of both tables (`ttl`: the spans' retention as a TTL expression on toDateTime(Timestamp), or "").
    An item's Timestamp is its original call's, so a captured copy expires with the spans it was taken from."""
    items_ttl = results_ttl = f"TTL {ttl}\n" if ttl else ""
    return [
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{ITEMS_TABLE}` (
    Created DateTime64(9),
    TenantId LowCardinality(String),
    SetName String,
    ItemId UInt32,
    Filters String CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    Timestamp DateTime64(9),
    ServiceName LowCardinality(String),
    Provider LowCardinality(String),
    Model LowCardinality(String),
    ResponseModel LowCardinality(String),
    Feature LowCardinality(String),
    InputMessages String CODEC(ZSTD(3)),
    OriginalOutput String CODEC(ZSTD(3)),
    InputTokens UInt64,
    OutputTokens UInt64,
    CacheReadTokens UInt64,
    CostUsd Nullable(Float64),
    DurationNs UInt64
) ENGINE = MergeTree
ORDER BY (TenantId, SetName, ItemId)
{items_ttl}SETTINGS index_granularity = 8192""",
        f"""CREATE TABLE IF NOT EXISTS `{database}`.`{RESULTS_TABLE}` (
    Timestamp DateTime64(9),
    TenantId LowCardinality(String),
    SetName String,
    RunId String,
    ItemId UInt32,
    Model LowCardinality(String),
    ResponseModel LowCardinality(String),
    Output String CODEC(ZSTD(3)),
    InputTokens UInt64,
    OutputTokens UInt64,
    CacheReadTokens UInt64,
    CostUsd Nullable(Float64),
    DurationNs UInt64,
    Attempts UInt8,
    Error String,
    ExactMatch Nullable(UInt8),
    Similarity Nullable(Float64),
    TraceId String,
    SpanId String,
    SystemPrompt String CODEC(ZSTD(3))
) ENGINE = MergeTree
ORDER BY (TenantId, SetName, RunId, ItemId)
{results_ttl}SETTINGS index_granularity = 8192""",
    ]


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _insert(client: Any, database: str, table: str, columns: list[str], rows: list[list[Any]]) -> None:
    for stmt in replay_schema_statements(database):
        client.command(stmt)
    if rows:
        client.insert(f"`{database}`.`{table}`", rows, column_names=columns)


async def insert_items(queries: Any, tenant: str, name: str, filters: dict[str, Any], created_ns: int,
                       items: list[dict[str, Any]]) -> None:
    filters_json = json.dumps(filters, sort_keys=True)
    rows = [
        [_ts(created_ns), tenant, name, i, filters_json, it["trace_id"], it["span_id"], _ts(it["timestamp_ns"]),
         it["service"], it["provider"] or "", it["model"] or "", it["response_model"] or "", it["feature"] or "",
         json.dumps(it["input_messages"]), it["original_output"], it["input_tokens"], it["output_tokens"],
         it["cache_read_tokens"], it["cost_usd"], it["duration_ns"]]
        for i, it in enumerate(items)
    ]
    await queries.run_on_client(_insert, queries.database, ITEMS_TABLE, _ITEM_COLUMNS, rows)


async def insert_results(queries: Any, tenant: str, name: str, run_id: str, results: list[dict[str, Any]],
                         now_ns: int) -> None:
    rows = [
        [_ts(now_ns), tenant, name, run_id, r["item"], r["model"], r.get("response_model") or "",
         r.get("output") or "", r.get("input_tokens") or 0, r.get("output_tokens") or 0,
         r.get("cache_read_tokens") or 0, r.get("cost_usd"), r.get("duration_ns") or 0, r.get("attempts") or 0,
         r.get("error") or "", None if r.get("exact_match") is None else int(bool(r["exact_match"])),
         r.get("similarity"), r.get("trace_id") or "", r.get("span_id") or "", r.get("system_prompt") or ""]
        for r in results
    ]
    await queries.run_on_client(_insert, queries.database, RESULTS_TABLE, _RESULT_COLUMNS, rows)


def _items_table(queries: Any) -> str:
    return f"`{queries.database}`.`{ITEMS_TABLE}`"


def _results_table(queries: Any) -> str:
    return f"`{queries.database}`.`{RESULTS_TABLE}`"


async def set_exists(queries: Any, tenant: str, name: str) -> bool:
    rows = await queries._query(
        f"SELECT count() FROM {_items_table(queries)} WHERE TenantId = {{t:String}} AND SetName = {{n:String}}",
        {"t": tenant, "n": name},
    )
    return bool(rows and rows[0][0])


async def list_sets(queries: Any, tenant: str) -> list[dict[str, Any]]:
    rows = await queries._query(
        f"SELECT SetName, toUnixTimestamp64Nano(min(Created)), count(), any(Filters), sum(CostUsd),"
        f" groupUniqArray(Model) FROM {_items_table(queries)} WHERE TenantId = {{t:String}}"
        " GROUP BY SetName ORDER BY min(Created) DESC, SetName",
        {"t": tenant},
    )
    runs = await queries._query(
        f"SELECT SetName, uniqExact(RunId) FROM {_results_table(queries)} WHERE TenantId = {{t:String}}"
        " GROUP BY SetName",
        {"t": tenant},
    )
    run_counts = {r[0]: int(r[1]) for r in runs}
    return [
        {"name": n, "created_ns": int(c), "items": int(k), "filters": json.loads(f), "original_cost_usd": cost,
         "models": sorted(m), "runs": run_counts.get(n, 0)}
        for n, c, k, f, cost, m in rows
    ]


async def get_items(queries: Any, tenant: str, name: str) -> list[dict[str, Any]]:
    rows = await queries._query(
        "SELECT ItemId, TraceId, SpanId, toUnixTimestamp64Nano(Timestamp), ServiceName, Provider, Model,"
        " ResponseModel, Feature, InputMessages, OriginalOutput, InputTokens, OutputTokens, CacheReadTokens,"
        f" CostUsd, DurationNs FROM {_items_table(queries)} WHERE TenantId = {{t:String}} AND SetName = {{n:String}}"
        " ORDER BY ItemId LIMIT 1 BY ItemId",
        {"t": tenant, "n": name},
    )
    return [
        {"item": int(i), "trace_id": tid, "span_id": sid, "timestamp_ns": int(ts), "service": svc,
         "provider": prov or None, "model": model or None, "response_model": rmodel or None, "feature": feat or None,
         "input_messages": json.loads(msgs), "original_output": out, "input_tokens": int(it),
         "output_tokens": int(ot), "cache_read_tokens": int(ct), "cost_usd": cost, "duration_ns": int(d)}
        for i, tid, sid, ts, svc, prov, model, rmodel, feat, msgs, out, it, ot, ct, cost, d in rows
    ]


async def get_set(queries: Any, tenant: str, name: str) -> dict[str, Any] | None:
    """The set with its items and runs (None: no such set for this tenant)."""
    sets = [s for s in await list_sets(queries, tenant) if s["name"] == name]
    if not sets:
        return None
    out = sets[0] | {"items": await get_items(queries, tenant, name)}
    out["runs"] = await list_runs(queries, tenant, name)
    return out


async def list_runs(queries: Any, tenant: str, name: str) -> list[dict[str, Any]]:
    rows = await queries._query(
        f"SELECT RunId, toUnixTimestamp64Nano(min(Timestamp)), any(Model), uniqExact(ItemId), countIf(Error != '')"
        f" FROM {_results_table(queries)} WHERE TenantId = {{t:String}} AND SetName = {{n:String}}"
        " GROUP BY RunId ORDER BY min(Timestamp), RunId",
        {"t": tenant, "n": name},
    )
    return [{"run_id": r, "started_ns": int(ts), "model": m, "items": int(k), "errors": int(e)}
            for r, ts, m, k, e in rows]


async def get_results(queries: Any, tenant: str, name: str, run_id: str) -> list[dict[str, Any]]:
    rows = await queries._query(
        "SELECT ItemId, Model, ResponseModel, Output, InputTokens, OutputTokens, CacheReadTokens, CostUsd,"
        " DurationNs, Attempts, Error, ExactMatch, Similarity, TraceId, SpanId"
        f" FROM {_results_table(queries)}"
        " WHERE TenantId = {t:String} AND SetName = {n:String} AND RunId = {r:String}"
        " ORDER BY ItemId, Timestamp DESC LIMIT 1 BY ItemId",
        {"t": tenant, "n": name, "r": run_id},
    )
    return [
        {"item": int(i), "model": m, "response_model": rm or None, "output": out, "input_tokens": int(it),
         "output_tokens": int(ot), "cache_read_tokens": int(ct), "cost_usd": cost, "duration_ns": int(d),
         "attempts": int(a), "error": err or None, "exact_match": None if em is None else bool(em),
         "similarity": sim, "trace_id": tid or None, "span_id": sid or None}
        for i, m, rm, out, it, ot, ct, cost, d, a, err, em, sim, tid, sid in rows
    ]
