"""clickhouse sink: stores spans in ClickHouse (a server, or embedded chDB) for analytics.

Tables (created on start when `create_schema` is true):
- `<database>.<table>` (default `tracepipe.otel_traces`): the OTel Collector ClickHouse
  exporter's `otel_traces` columns, types, indexes, partitioning and ordering, so Grafana's
  ClickHouse plugin and existing otel_traces queries keep working, plus typed GenAI columns
  filled from the canonical attributes (GenAiProvider, GenAiOperation, RequestModel,
  ResponseModel, Input/Output/CacheRead/CacheCreationTokens, CostUsd — NULL when unpriced —,
  UserId, SessionId, ConversationId, Feature, TenantId).
- `<table>_trace_summary`: one row per trace and tenant (after merges: spans another tenant sent
  under the same trace id never add to this tenant's row), fed at insert time by the
  materialized view `<table>_trace_summary_mv`: start/end, span and error counts, total cost
  and tokens, root span name/service/status, services, models and the trace-level
  Feature/UserId/TenantId/SessionId (any non-empty value among the trace's spans). Readers
  aggregate it `GROUP BY TraceId` (see pipeline/query/traces.py).

Delivery: every insert carries `insert_deduplication_token = <batch_id>#<chunk>` and the
tables keep a deduplication window, so a redelivered batch is stored once, in the summary
too (`deduplicate_blocks_in_dependent_materialized_views`). Retention is a table TTL on
Timestamp (`ttl_days`, per tenant `tenant_ttl_days`: one `TTL ... WHERE TenantId = ...` rule per
tenant, see `ttl_clause`); rows already older than that are dropped as they arrive, and counted
(`tracepipe_dropped_spans_total{reason="older_than_retention"}`). A changed retention is applied
to existing tables on start (`ALTER TABLE ... MODIFY TTL`).

TenantId is the tracepipe tenant owning the span: the resource attribute `tenant.id` (stamped
from the ingest token when auth is on), else "default" (see pipeline/tenants.py).

Rows are built column by column as Arrow (maps as Arrow map arrays) and sent with
`insert_arrow`: the fastest path into ClickHouse and chDB (see bench/chdb_insert.py).
All client calls run on one dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pydantic import Field, field_validator

from pipeline.component import BaseSink, ComponentConfig, ComponentContext, Factory, SinkError
from pipeline.query.store import StoreLockedError, open_client, resolve_dsn
from pipeline.spans import SPAN_KIND_NAMES, STATUS_CODE_NAMES, Span, SpanBatch
from pipeline.tenants import tenant_of_resource

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")

# ClickHouse error codes worth retrying (the server is busy or unreachable, not the data wrong).
_TRANSIENT_CODES = {
    3,  # UNEXPECTED_END_OF_FILE
    23,  # CANNOT_READ_FROM_ISTREAM
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    164,  # READONLY
    173,  # CANNOT_ALLOCATE_MEMORY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    279,  # ALL_CONNECTION_TRIES_FAILED
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    439,  # CANNOT_SCHEDULE_TASK
    999,  # KEEPER_EXCEPTION
}
# ClickHouse error codes meaning the rows themselves are unacceptable, by dead-letter reason
# (pipeline.dead_letter.REASONS). Retrying the same rows cannot help: the chain isolates them.
_BAD_DATA_REASONS = {
    43: "type_mismatch",  # ILLEGAL_TYPE_OF_ARGUMENT
    53: "type_mismatch",  # TYPE_MISMATCH
    70: "type_mismatch",  # CANNOT_CONVERT_TYPE
    386: "type_mismatch",  # NO_COMMON_TYPE
    69: "overflow",  # ARGUMENT_OUT_OF_BOUND
    153: "bad_argument",  # ILLEGAL_DIVISION
    321: "overflow",  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    407: "overflow",  # DECIMAL_OVERFLOW (e.g. a span end past 2262 in the trace-summary view)
    6: "parse_error",  # CANNOT_PARSE_TEXT
    26: "parse_error",  # CANNOT_PARSE_QUOTED_STRING
    27: "parse_error",  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38: "parse_error",  # CANNOT_PARSE_DATE
    41: "parse_error",  # CANNOT_PARSE_DATETIME
    72: "parse_error",  # CANNOT_PARSE_NUMBER
    117: "parse_error",  # INCORRECT_DATA
    395: "constraint_violation",  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (throwIf in a view)
    469: "constraint_violation",  # VIOLATED_CONSTRAINT
    36: "bad_argument",  # BAD_ARGUMENTS
    42: "bad_argument",  # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
    190: "bad_argument",  # SIZES_OF_ARRAYS_DONT_MATCH
    128: "too_large",  # TOO_LARGE_ARRAY_SIZE
    131: "too_large",  # TOO_LARGE_STRING_SIZE
}
_BAD_DATA_CODES = set(_BAD_DATA_REASONS)
_CODE = re.compile(r"Code: (\d+)")

DEDUP_WINDOW = 10_000  # inserted blocks remembered per table for redelivery deduplication


class ClickHouseSinkConfig(ComponentConfig):
    dsn: str | None = Field(
        None,
        description="Where to store: `http(s)://user:pass@host:8123/db` for a ClickHouse server, "
        "`chdb:///abs/path` for embedded chDB. Unset: chdb://<service.data_dir>/clickhouse.",
    )
    database: str = Field("tracepipe", description="Database holding the tables (created if missing).")
    table: str = Field(
        "otel_traces",
        description="Spans table (OTel Collector ClickHouse exporter columns plus GenAI columns); "
        "the per-trace summary is `<table>_trace_summary`.",
    )
    logs_table: str = Field(
        "otel_logs",
        description="Log records table (OTel Collector ClickHouse exporter `otel_logs` columns), in the same "
        "database with the same TTL; written by the OTLP logs receivers (see sinks/clickhouse_logs.py).",
    )
    logs_max_pending_requests: int = Field(
        4,
        ge=1,
        description="OTLP logs requests being stored at once; more get 429 / RESOURCE_EXHAUSTED with Retry-After "
        "(after waiting up to the receiver's enqueue_timeout for a slot).",
    )
    ttl_days: int | None = Field(
        30,
        ge=1,
        description="Retention: rows older than this many days (by span Timestamp) are dropped. "
        "null keeps data forever. The default of every tenant not in `tenant_ttl_days`.",
    )
    tenant_ttl_days: dict[str, int | None] = Field(
        default_factory=dict,
        description="Retention per tenant (TenantId): tenant -> days, null keeps that tenant's data forever. "
        "Tenants not listed keep `ttl_days`. Rows then expire one by one in merges "
        "(`ttl_only_drop_parts = 0`) rather than by whole daily parts.",
    )
    max_insert_rows: int = Field(
        100_000, ge=1, description="Batches with more spans are inserted in chunks of at most this many rows."
    )
    retries: int = Field(
        2,
        ge=0,
        description="Immediate retries of an insert that failed transiently (connection, busy "
        "server) before the write fails back to the pipeline, which retries the batch with its own backoff.",
    )
    retry_backoff: float = Field(0.2, ge=0, description="Seconds before the first retry; doubles per retry.")
    retry_backoff_max: float = Field(5.0, ge=0, description="Upper bound of the retry backoff, seconds.")
    create_schema: bool = Field(True, description="Create the database, tables and view on start if missing.")
    attribute_indexes: bool = Field(
        True,
        description="Bloom-filter skip indexes on the attribute maps' keys and values, as the OTel Collector "
        "exporter creates them (speed up `SpanAttributes['k'] = 'v'` filters). Off, inserts take about half "
        "the CPU (see bench/chdb_insert.py). Applies when the table is created.",
    )
    connect_timeout: int = Field(10, ge=1, description="Seconds to connect to a ClickHouse server.")
    send_receive_timeout: int = Field(
        60, ge=1,
        description="Seconds a ClickHouse server may take to answer one request before the write fails "
        "(retryably): a hung server never holds a batch longer than this per attempt.",
    )
    username: str | None = Field(None, description="User for a ClickHouse server (overrides the DSN's).")
    password: str | None = Field(None, description="Password for a ClickHouse server (overrides the DSN's).")

    @field_validator("database", "table", "logs_table")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _IDENT.match(v):
            raise ValueError("must be a plain identifier (letters, digits, underscore; not starting with a digit)")
        return v

    @field_validator("tenant_ttl_days")
    @classmethod
    def _tenant_ttl(cls, v: dict[str, int | None]) -> dict[str, int | None]:
        for tenant, days in v.items():
            if not _TENANT_NAME.match(tenant):
                raise ValueError(
                    f"{tenant!r}: a tenant name is 1-128 letters, digits or ._:@- (starting with a letter or digit)"
                )
            if days is not None and days < 1:
                raise ValueError(f"{tenant}: days must be >= 1 (or null to keep forever)")
        return v

    def ttl_days_for(self, tenant: str) -> int | None:
        return self.tenant_ttl_days.get(tenant, self.ttl_days)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("chdb:", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v


# --- schema ---------------------------------------------------------------------------


def summary_table(table: str) -> str:
    return f"{table}_trace_summary"


_MAP_INDEXES = """\
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
"""


def ttl_expression(time_expr: str, ttl_days: int | None, tenant_ttl_days: dict[str, int | None] | None = None) -> str:
    """The TTL of a table keyed by `time_expr`, as ClickHouse prints it back ("" for none).

    Without per-tenant retention: `<time> + toIntervalDay(<ttl_days>)`. With it: one rule per tenant
    with a limit (`... WHERE TenantId = 't'`) and one for every other tenant (`... WHERE TenantId
    NOT IN (...)`); a tenant (or the default) kept forever has no rule."""
    tenants = dict(sorted((tenant_ttl_days or {}).items()))
    for t in tenants:
        if not _TENANT_NAME.match(t):
            raise ValueError(f"not a tenant name: {t!r}")
    if not tenants:
        return f"{time_expr} + toIntervalDay({int(ttl_days)})" if ttl_days else ""
    rules = [f"{time_expr} + toIntervalDay({int(d)}) WHERE TenantId = '{t}'" for t, d in tenants.items() if d]
    if ttl_days:
        listed = ", ".join(f"'{t}'" for t in tenants)
        rules.append(f"{time_expr} + toIntervalDay({int(ttl_days)}) WHERE TenantId NOT IN ({listed})")
    return ", ".join(rules)


def schema_statements(
    database: str,
    table: str,
    ttl_days: int | None,
    *,
    attribute_indexes: bool = True,
    tenant_ttl_days: dict[str, int | None] | None = None,
) -> list[str]:
    """DDL for the database, the spans table, the trace summary table and its view."""
    for name in (database, table):
        if not _IDENT.match(name):
            raise ValueError(f"not a plain identifier: {name!r}")
    db, spans, summ = f"`{database}`", f"`{table}`", f"`{summary_table(table)}`"
    mv = f"`{summary_table(table)}_mv`"
    map_indexes = _MAP_INDEXES if attribute_indexes else ""
    spans_ttl_expr = ttl_expression("toDateTime(Timestamp)", ttl_days, tenant_ttl_days)
    summ_ttl_expr = ttl_expression("toDateTime(Start)", ttl_days, tenant_ttl_days)
    spans_ttl = f"TTL {spans_ttl_expr}\n" if spans_ttl_expr else ""
    summ_ttl = f"TTL {summ_ttl_expr}\n" if summ_ttl_expr else ""
    drop_parts = 0 if tenant_ttl_days else 1
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.{spans} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    GenAiProvider LowCardinality(String) CODEC(ZSTD(1)),
    GenAiOperation LowCardinality(String) CODEC(ZSTD(1)),
    RequestModel LowCardinality(String) CODEC(ZSTD(1)),
    ResponseModel LowCardinality(String) CODEC(ZSTD(1)),
    InputTokens UInt64 CODEC(T64, ZSTD(1)),
    OutputTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheReadTokens UInt64 CODEC(T64, ZSTD(1)),
    CacheCreationTokens UInt64 CODEC(T64, ZSTD(1)),
    CostUsd Nullable(Float64) CODEC(ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    SessionId String CODEC(ZSTD(1)),
    ConversationId String CODEC(ZSTD(1)),
    Feature LowCardinality(String) CODEC(ZSTD(1)),
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
{map_indexes}    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8,
    INDEX idx_user_id UserId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_request_model RequestModel TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
{spans_ttl}SETTINGS index_granularity = 8192, ttl_only_drop_parts = {drop_parts},
    non_replicated_deduplication_window = {DEDUP_WINDOW}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.{summ} (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime64(9)),
    End SimpleAggregateFunction(max, DateTime64(9)),
    SpanCount SimpleAggregateFunction(sum, UInt64),
    ErrorCount SimpleAggregateFunction(sum, UInt64),
    LlmCalls SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Nullable(Float64)),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64),
    CacheCreationTokens SimpleAggregateFunction(sum, UInt64),
    RootSpanName SimpleAggregateFunction(max, String),
    RootServiceName SimpleAggregateFunction(max, String),
    RootStatusCode SimpleAggregateFunction(max, String),
    Services SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    Models SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    Feature SimpleAggregateFunction(max, String),
    UserId SimpleAggregateFunction(max, String),
    TenantId LowCardinality(String),
    SessionId SimpleAggregateFunction(max, String)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Start)
ORDER BY (TraceId, TenantId)
{summ_ttl}SETTINGS index_granularity = 8192, non_replicated_deduplication_window = {DEDUP_WINDOW}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{mv} TO {db}.{summ} AS
SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(addNanoseconds(Timestamp, toInt64(Duration))) AS End,
    count() AS SpanCount,
    countIf(StatusCode = 'Error') AS ErrorCount,
    countIf(RequestModel != '' OR ResponseModel != '') AS LlmCalls,
    sum(CostUsd) AS CostUsd,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(CacheCreationTokens) AS CacheCreationTokens,
    max(if(ParentSpanId = '', toString(SpanName), '')) AS RootSpanName,
    max(if(ParentSpanId = '', toString(ServiceName), '')) AS RootServiceName,
    max(if(ParentSpanId = '', toString(StatusCode), '')) AS RootStatusCode,
    groupUniqArray(toString(ServiceName)) AS Services,
    groupUniqArrayIf(toString(if(RequestModel != '', RequestModel, ResponseModel)),
                     RequestModel != '' OR ResponseModel != '') AS Models,
    max(toString(Feature)) AS Feature,
    max(UserId) AS UserId,
    toString(TenantId) AS TenantId,
    max(SessionId) AS SessionId
FROM {db}.{spans}
GROUP BY TraceId, TenantId""",
    ]


_TABLE_TTL = re.compile(r" TTL (.*?)(?: SETTINGS |$)")


def sync_retention(client: Any, cfg: ClickHouseSinkConfig) -> list[str]:
    """Bring the TTL of existing spans and summary tables in line with the config (a table created
    by an older config keeps its TTL otherwise). Returns the ALTER statements run."""
    ran: list[str] = []
    drop_parts = 0 if cfg.tenant_ttl_days else 1
    for table, time_expr in ((cfg.table, "toDateTime(Timestamp)"), (summary_table(cfg.table), "toDateTime(Start)")):
        rows = client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": cfg.database, "t": table},
        ).result_rows
        if not rows:
            continue
        m = _TABLE_TTL.search(rows[0][0])
        current = m.group(1) if m else ""
        wanted = ttl_expression(time_expr, cfg.ttl_days, cfg.tenant_ttl_days)
        target = f"`{cfg.database}`.`{table}`"
        if current != wanted:
            stmt = f"ALTER TABLE {target} " + (f"MODIFY TTL {wanted}" if wanted else "REMOVE TTL")
            if wanted or current:
                client.command(stmt)
                ran.append(stmt)
        if table == cfg.table and f"ttl_only_drop_parts = {drop_parts}" not in rows[0][0]:
            stmt = f"ALTER TABLE {target} MODIFY SETTING ttl_only_drop_parts = {drop_parts}"
            client.command(stmt)
            ran.append(stmt)
    return ran


# --- rows as Arrow columns --------------------------------------------------------------

_STR = pa.string()
_MAP = pa.map_(pa.string(), pa.string())
_TS = pa.timestamp("ns")


def attr_text(value: Any) -> str:
    """An attribute value as the Map(String) text: strings as-is, bools true/false,
    numbers str(), lists/dicts (and bytes) as JSON."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return str(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


_chain = itertools.chain.from_iterable
_NONE = type(None)
_INT_TYPES = {int, _NONE}
_NUM_TYPES = {int, float, _NONE}
_KIND_NAMES = dict(enumerate(SPAN_KIND_NAMES))
_STATUS_NAMES = dict(enumerate(STATUS_CODE_NAMES))
_I64 = 2**63 - 1
_U64 = 2**64 - 1


def _map_array(dicts: list[dict[str, Any]]) -> pa.MapArray:
    """Attribute dicts as one Arrow map<string, string> array (values as `attr_text`)."""
    offsets = list(itertools.accumulate(map(len, dicts), initial=0))
    keys = list(_chain(dicts))
    values = [
        v if (c := v.__class__) is str else str(v) if c is int or c is float else attr_text(v)
        for v in _chain(map(dict.values, dicts))
    ]
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys, _STR), pa.array(values, _STR))


def _list_offsets(lengths: list[int]) -> pa.Array:
    return pa.array(list(itertools.accumulate(lengths, initial=0)), pa.int32())


def _clamp_ns(values: list[int]) -> list[int]:
    """Timestamps as int64 nanoseconds (protobuf fixed64 can exceed int64)."""
    if values and (min(values) < 0 or max(values) > _I64):
        return [0 if v < 0 else _I64 if v > _I64 else v for v in values]
    return values


class _MapColumns:
    """Typed string columns taken out of the SpanAttributes map array, in Arrow rather than by one
    dict lookup per span: a key's value is its map value (the same `attr_text`), "" where absent."""

    def __init__(self, attributes: pa.MapArray) -> None:
        self.keys, self.items = attributes.keys, attributes.items  # the map is built from offset 0
        lengths = np.diff(attributes.offsets.to_numpy())
        self.parents = np.repeat(np.arange(len(attributes)), lengths)  # the row of each key
        self.present = set(pc.unique(self.keys).to_pylist())  # attribute keys of this batch
        self.empty = pa.array([""] * len(attributes), _STR)

    def text(self, key: str) -> pa.Array:
        if key not in self.present:
            return self.empty
        at = pc.indices_nonzero(pc.equal(self.keys, key))  # one per row at most (dict keys)
        mask = np.zeros(len(self.empty), dtype=bool)
        mask[self.parents[at.to_numpy()]] = True
        return pc.replace_with_mask(self.empty, pa.array(mask), self.items.take(at))


def _token_value(v: Any) -> int:
    if v is None or v.__class__ is bool:
        return 0
    try:
        n = int(float(v)) if v.__class__ is not int else v
    except (TypeError, ValueError, OverflowError):
        return 0
    return n if 0 < n <= _U64 else 0 if n <= 0 else _U64


def _token_column(attrs: list[dict[str, Any]], key: str, present: set[str]) -> pa.Array:
    if key not in present:
        return pa.array([0] * len(attrs), pa.uint64())
    vals = [a.get(key) for a in attrs]
    if set(map(type, vals)) <= _INT_TYPES:
        try:
            arr = pa.array(vals, pa.int64())
            return pc.max_element_wise(arr, 0).fill_null(0).cast(pa.uint64())
        except (pa.ArrowInvalid, OverflowError):
            pass
    return pa.array([_token_value(v) for v in vals], pa.uint64())


def _cost_value(v: Any) -> float | None:
    if v is None or v.__class__ is bool:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _cost_column(attrs: list[dict[str, Any]], present: set[str]) -> pa.Array:
    if "gen_ai.usage.cost_usd" not in present:
        return pa.nulls(len(attrs), pa.float64())
    vals = [a.get("gen_ai.usage.cost_usd") for a in attrs]
    if set(map(type, vals)) <= _NUM_TYPES:
        try:
            arr = pa.array(vals, pa.float64())
            return pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
        except (pa.ArrowInvalid, OverflowError):
            pass
    return pa.array([_cost_value(v) for v in vals], pa.float64())


def spans_to_arrow(spans: list[Span]) -> pa.Table:
    """The spans as an Arrow table with the spans table's columns, built column by column."""
    attrs = [s.attributes for s in spans]
    span_attributes = _map_array(attrs)
    typed = _MapColumns(span_attributes)
    present = typed.present  # absent typed columns cost nothing
    # Resources are shared by the spans of one ResourceSpans: convert each once, then take.
    resources = [s.resource for s in spans]
    first: dict[int, int] = {}
    res_idx = [first.setdefault(id(r), len(first)) for r in resources]
    uniq = list({id(r): r for r in resources}.values())
    services = []
    for r in uniq:
        svc = r.attributes.get("service.name")
        services.append(svc if svc.__class__ is str and svc else "unknown_service")
    tenants = [tenant_of_resource(r) for r in uniq]
    take = pa.array(res_idx, pa.int32())
    starts = _clamp_ns([s.start_ns for s in spans])
    ends = [s.end_ns for s in spans]
    durations = [e - b if e > b else 0 for b, e in zip(starts, ends, strict=True)]
    if durations and max(durations) > _U64:
        durations = [min(d, _U64) for d in durations]

    ev_lens = [len(s.events) for s in spans]
    events = list(_chain(s.events for s in spans)) if any(ev_lens) else []
    ln_lens = [len(s.links) for s in spans]
    links = list(_chain(s.links for s in spans)) if any(ln_lens) else []
    ev_off, ln_off = _list_offsets(ev_lens), _list_offsets(ln_lens)

    if "gen_ai.provider.name" in present or "gen_ai.system" in present:
        providers = [a.get("gen_ai.provider.name") or a.get("gen_ai.system") or "" for a in attrs]
        providers = [v if v.__class__ is str else attr_text(v) for v in providers]
    else:
        providers = [""] * len(attrs)
    u64 = pa.uint64()
    columns: dict[str, pa.Array] = {
        "Timestamp": pa.array(starts, _TS),
        "TraceId": pa.array([s.trace_id for s in spans], _STR),
        "SpanId": pa.array([s.span_id for s in spans], _STR),
        "ParentSpanId": pa.array([s.parent_span_id for s in spans], _STR),
        "TraceState": pa.array([s.trace_state for s in spans], _STR),
        "SpanName": pa.array([s.name for s in spans], _STR),
        "SpanKind": pa.array([_KIND_NAMES.get(s.kind, "Unspecified") for s in spans], _STR),
        "ServiceName": pa.array([services[i] for i in res_idx], _STR),
        "ResourceAttributes": _map_array([r.attributes for r in uniq]).take(take),
        "ScopeName": pa.array([s.scope_name for s in spans], _STR),
        "ScopeVersion": pa.array([s.scope_version for s in spans], _STR),
        "SpanAttributes": span_attributes,
        "Duration": pa.array(durations, u64),
        "StatusCode": pa.array([_STATUS_NAMES.get(s.status_code, "Unset") for s in spans], _STR),
        "StatusMessage": pa.array([s.status_message for s in spans], _STR),
        "Events.Timestamp": pa.ListArray.from_arrays(ev_off, pa.array(_clamp_ns([e.time_ns for e in events]), _TS)),
        "Events.Name": pa.ListArray.from_arrays(ev_off, pa.array([e.name for e in events], _STR)),
        "Events.Attributes": pa.ListArray.from_arrays(ev_off, _map_array([e.attributes for e in events])),
        "Links.TraceId": pa.ListArray.from_arrays(ln_off, pa.array([lk.trace_id for lk in links], _STR)),
        "Links.SpanId": pa.ListArray.from_arrays(ln_off, pa.array([lk.span_id for lk in links], _STR)),
        "Links.TraceState": pa.ListArray.from_arrays(ln_off, pa.array([lk.trace_state for lk in links], _STR)),
        "Links.Attributes": pa.ListArray.from_arrays(ln_off, _map_array([lk.attributes for lk in links])),
        "GenAiProvider": pa.array(providers, _STR),
        "GenAiOperation": typed.text("gen_ai.operation.name"),
        "RequestModel": typed.text("gen_ai.request.model"),
        "ResponseModel": typed.text("gen_ai.response.model"),
        "InputTokens": _token_column(attrs, "gen_ai.usage.input_tokens", present),
        "OutputTokens": _token_column(attrs, "gen_ai.usage.output_tokens", present),
        "CacheReadTokens": _token_column(attrs, "gen_ai.usage.cache_read.input_tokens", present),
        "CacheCreationTokens": _token_column(attrs, "gen_ai.usage.cache_creation.input_tokens", present),
        "CostUsd": _cost_column(attrs, present),
        "UserId": typed.text("user.id"),
        "SessionId": typed.text("session.id"),
        "ConversationId": typed.text("gen_ai.conversation.id"),
        "Feature": typed.text("app.feature"),
        "TenantId": pa.array([tenants[i] for i in res_idx], _STR),
    }
    return pa.table(columns)


# --- the sink ---------------------------------------------------------------------------


def error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same insert can help (connection trouble, a busy server)."""
    if isinstance(exc, OperationalError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DatabaseError):
        return error_code(exc) in _TRANSIENT_CODES
    return False


def is_bad_data(exc: BaseException) -> bool:
    """Whether the server refused the data itself (retrying the same rows cannot help)."""
    return isinstance(exc, DatabaseError) and error_code(exc) in _BAD_DATA_CODES


def classify_error(exc: BaseException) -> tuple[bool, str | None]:
    """(retryable, dead-letter reason) of a failed insert. Bad data is not retryable and has a
    reason; everything else (transient, or unknown such as a missing table, an operator
    problem) is retryable, and dead-lettered only past the retry budget."""
    if is_bad_data(exc):
        return False, _BAD_DATA_REASONS[error_code(exc)]  # type: ignore[index]
    return True, None


def redact_dsn(dsn: str) -> str:
    """The DSN without its credentials, for logs and errors."""
    parts = urlsplit(dsn)
    if parts.password is None and parts.username is None:
        return dsn
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _refuse_unstorable_times(spans: list[Span], component_id: str, *, stored: int) -> None:
    """Refuse (not retryably) a chunk holding a span that ends past DateTime64(9)'s range.

    Checked before inserting because ClickHouse would not refuse it atomically: the spans
    table takes the rows, then the trace-summary view overflows (code 407) and the insert
    fails, leaving rows behind that a retry of the halves would store again."""
    if not spans or max([s.end_ns for s in spans]) <= _I64:
        return
    if any(_summary_end_overflows(s.start_ns, s.end_ns) for s in spans if s.end_ns > _I64):
        raise SinkError(
            f"{component_id}: span times after 2262-04-11 cannot be stored (DateTime64(9) range; "
            "the trace-summary view would overflow, ClickHouse code 407)",
            retryable=False,
            reason="overflow",
            stored=stored,
        )


_MIN_DT64_NS = -2_208_988_800 * 1_000_000_000  # 1900-01-01


def _summary_end_overflows(start_ns: int, end_ns: int) -> bool:
    """Whether the summary view's `addNanoseconds(Timestamp, toInt64(Duration))` leaves
    DateTime64(9)'s range for this span, as `spans_to_arrow` writes its columns."""
    start = min(max(start_ns, 0), _I64)
    duration = min(end_ns - start, _U64) if end_ns > start else 0
    signed = duration - 2**64 if duration > _I64 else duration
    return not _MIN_DT64_NS <= start + signed <= _I64


def dedup_token(batch_id: str, chunk: int) -> str:
    return f"{batch_id}#{chunk}"


class ClickHouseSink(BaseSink):
    def __init__(self, component_id: str, cfg: ClickHouseSinkConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.cfg = cfg
        self.dsn = resolve_dsn(cfg.dsn, ctx.data_dir)
        self.target = f"`{cfg.database}`.`{cfg.table}`"
        # Client calls on one thread; Arrow encoding on another, so a batch's encoding overlaps
        # the previous batch's insert (chDB and the HTTP client release the GIL while inserting).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{component_id}")
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sink-{component_id}-encode")
        self._client: Any = None
        self._ready = False
        self._sleep = asyncio.sleep  # replaceable in tests

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        """Connect and create the schema. A server that cannot be reached yet is not fatal: the
        sink stays not-ready and connects on the next write (which fails retryably until then).
        StoreLockedError (another process holds the chDB directory), bad credentials and the
        like propagate: their message tells the user what to fix."""
        # pyarrow imports pandas on its first conversion of a Python list (about a second of
        # CPU, holding the GIL): pay it here rather than on the first batch.
        await asyncio.get_running_loop().run_in_executor(self._encoder, spans_to_arrow, [])
        try:
            await self._connect()
        except Exception as e:
            if not is_transient(e):
                raise
            self.ctx.logger.warning(
                "%s: ClickHouse at %s is unreachable (%s); will connect on the next write",
                self.component_id,
                redact_dsn(self.dsn),
                type(e).__name__,
            )

    async def _connect(self) -> None:
        self._client = await self._run(self._open)
        self._ready = True

    def _open(self) -> Any:
        client = open_client(
            self.dsn, username=self.cfg.username, password=self.cfg.password,
            http_options={"connect_timeout": self.cfg.connect_timeout,
                          "send_receive_timeout": self.cfg.send_receive_timeout},
        )
        if self.cfg.create_schema:
            for stmt in schema_statements(
                self.cfg.database, self.cfg.table, self.cfg.ttl_days, attribute_indexes=self.cfg.attribute_indexes,
                tenant_ttl_days=self.cfg.tenant_ttl_days,
            ):
                client.command(stmt)
            from pipeline.query.scores import scores_schema_statements  # scores and feedback (POST /api/scores)

            scores_ttl = ttl_expression("toDateTime(Timestamp)", self.cfg.ttl_days, self.cfg.tenant_ttl_days)
            for stmt in scores_schema_statements(self.cfg.database, scores_ttl):
                client.command(stmt)
            from pipeline.replay.store import replay_schema_statements  # replay sets and runs (/api/replay)

            for stmt in replay_schema_statements(self.cfg.database, scores_ttl):
                client.command(stmt)
            sync_retention(client, self.cfg)
        return client

    def ready(self) -> bool:
        return self._ready

    async def run_with_client(self, fn: Any, *args: Any) -> Any:
        """`fn(client, *args)` on the sink's client thread, connecting first if needed: other
        writers of the same store (the logs store) share the sink's one writer thread."""
        if self._client is None:
            await self._connect()
        return await self._run(lambda: fn(self._client, *args))

    async def write(self, batch: SpanBatch) -> None:
        if not batch.spans:
            return
        if self._client is None:
            try:
                await self._connect()
            except Exception as e:
                raise SinkError(
                    f"{self.component_id}: cannot connect to ClickHouse at {redact_dsn(self.dsn)}: {type(e).__name__}",
                    retryable=not isinstance(e, StoreLockedError),
                ) from e
        step = self.cfg.max_insert_rows
        spans = batch.spans
        if self.cfg.ttl_days or self.cfg.tenant_ttl_days:
            # Inserted all the same (a batch's chunks must not depend on the clock, or a redelivery
            # would cut them differently under the same tokens); the table's TTL drops them.
            expired = self._expired(spans)
            if expired:
                self.ctx.telemetry.count_drop(self.component_id, "older_than_retention", expired, processor=False)
        chunks = [spans[lo : lo + step] for lo in range(0, len(spans), step)]
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(self._encoder, self._encode, chunks[0])
        try:
            for i, chunk in enumerate(chunks):
                table = await pending
                _refuse_unstorable_times(chunk, self.component_id, stored=i * step)
                if i + 1 < len(chunks):  # encode the next chunk while this one is inserted
                    pending = loop.run_in_executor(self._encoder, self._encode, chunks[i + 1])
                try:
                    await self._insert_chunk(table, len(chunk), dedup_token(batch.batch_id, i))
                except SinkError as e:
                    e.stored = i * step  # the chunks before this one are stored
                    raise
        finally:
            if not pending.done():
                pending.cancel()

    def _expired(self, spans: list[Span]) -> int:
        now = time.time_ns()
        if not self.cfg.tenant_ttl_days:
            cutoff = now - (self.cfg.ttl_days or 0) * 86_400 * 1_000_000_000
            return sum(1 for s in spans if s.start_ns < cutoff)
        cutoffs: dict[str, int | None] = {}
        expired = 0
        for s in spans:
            tenant = tenant_of_resource(s.resource)
            if tenant not in cutoffs:
                days = self.cfg.ttl_days_for(tenant)
                cutoffs[tenant] = None if days is None else now - days * 86_400 * 1_000_000_000
            cutoff = cutoffs[tenant]
            if cutoff is not None and s.start_ns < cutoff:
                expired += 1
        return expired

    def _encode(self, spans: list[Span]) -> pa.Table:
        """The chunk as Arrow; spans that cannot be encoded are dropped (counted), not the chunk."""
        try:
            return spans_to_arrow(spans)
        except Exception:
            good: list[Span] = []
            for span in spans:
                try:
                    spans_to_arrow([span])
                except Exception:
                    continue
                good.append(span)
            bad = len(spans) - len(good)
            self.ctx.logger.error("%s: dropped %d span(s) that could not be encoded", self.component_id, bad)
            self.ctx.telemetry.count_drop(self.component_id, "unencodable", bad, processor=False)
            return spans_to_arrow(good)

    async def _insert_chunk(self, table: pa.Table, n_spans: int, token: str) -> None:
        if table.num_rows == 0:
            return
        backoff = self.cfg.retry_backoff
        attempt = 0
        while True:
            try:
                await self._run(self._insert, table, token)
                return
            except Exception as e:
                transient = is_transient(e)
                if not transient or attempt >= self.cfg.retries:
                    # Only data the server refuses is not retryable (the chain isolates and
                    # dead-letters it); anything else (a missing table, an unknown failure) stays
                    # retryable, dead-lettered only past the chain's retry budget.
                    # Never put attribute values in the message: name the error only.
                    code = error_code(e)
                    detail = f"{type(e).__name__}" + (f" (ClickHouse code {code})" if code else "")
                    retryable, reason = classify_error(e)
                    raise SinkError(
                        f"{self.component_id}: insert of {n_spans} spans into {self.target} failed: {detail}",
                        retryable=retryable,
                        reason=reason,
                    ) from e
                attempt += 1
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_backoff_max)

    def _insert(self, table: pa.Table, token: str) -> None:
        self._client.insert_arrow(
            f"{self.cfg.database}.{self.cfg.table}",
            table,
            settings={
                "insert_deduplicate": 1,
                "insert_deduplication_token": token,
                "deduplicate_blocks_in_dependent_materialized_views": 1,
            },
        )

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self._ready = False
        client, self._client = self._client, None
        if client is not None:
            try:
                await self._run(client.close)
            except Exception:
                self.ctx.logger.warning("%s: closing the ClickHouse client failed", self.component_id)
        self._executor.shutdown(wait=True)
        self._encoder.shutdown(wait=True)


def _create(component_id: str, cfg: ClickHouseSinkConfig, ctx: ComponentContext) -> ClickHouseSink:
    return ClickHouseSink(component_id, cfg, ctx)


factory: Factory[ClickHouseSinkConfig, ClickHouseSink] = Factory(
    type="clickhouse",
    config_model=ClickHouseSinkConfig,
    create=_create,
    description="Stores spans in ClickHouse (server or embedded chDB): otel_traces columns plus GenAI columns, "
    "a per-trace summary, deduplicated per batch.",
)
