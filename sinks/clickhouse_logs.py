"""The `otel_logs` table of the clickhouse sink: schema and rows.

Columns, types, indexes, partitioning and ordering are the OTel Collector ClickHouse
exporter's `otel_logs` (Timestamp, TimestampTime, TraceId, SpanId, TraceFlags, SeverityText,
SeverityNumber, ServiceName, Body, ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl,
ScopeName, ScopeVersion, ScopeAttributes, LogAttributes, EventName), so Grafana's ClickHouse
plugin log views and existing otel_logs queries work. It lives in the sink's database with
the sink's TTL (`ttl_days`). A record's body is stored as text: a string body as-is, any
other body (a GenAI event's map, an array, a number) as JSON, like attribute values.
Trace and span ids are lowercase hex ("" when the record has none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sinks.clickhouse import _clamp_ns, _map_array, attr_text

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_STR = pa.string()
_TS = pa.timestamp("ns")


def logs_schema_statements(database: str, table: str, ttl_days: int | None) -> list[str]:
    """DDL for the database and the logs table."""
    for name in (database, table):
        if not _IDENT.match(name):
            raise ValueError(f"not a plain identifier: {name!r}")
    db, logs = f"`{database}`", f"`{table}`"
    ttl = f"TTL TimestampTime + toIntervalDay({int(ttl_days)})\n" if ttl_days else ""
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.{logs} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_lower_body lower(Body) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
{ttl}SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000""",
    ]


@dataclass
class LogRow:
    """One log record, decoded (values are plain Python: redaction works on these)."""

    time_ns: int
    trace_id: str
    span_id: str
    flags: int
    severity_text: str
    severity_number: int
    service: str
    body: Any
    resource_schema_url: str
    resource_attributes: dict[str, Any]
    scope_schema_url: str
    scope_name: str
    scope_version: str
    scope_attributes: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    event_name: str = ""


def body_text(body: Any) -> str:
    """A body as the Body column's text ("" for an empty body)."""
    if body is None:
        return ""
    return attr_text(body)


def log_rows_to_arrow(rows: list[LogRow]) -> pa.Table:
    """The rows as an Arrow table with the logs table's columns (TimestampTime is a DEFAULT)."""
    return pa.table(
        {
            "Timestamp": pa.array(_clamp_ns([r.time_ns for r in rows]), _TS),
            "TraceId": pa.array([r.trace_id for r in rows], _STR),
            "SpanId": pa.array([r.span_id for r in rows], _STR),
            "TraceFlags": pa.array([r.flags & 0xFF for r in rows], pa.uint8()),
            "SeverityText": pa.array([r.severity_text for r in rows], _STR),
            "SeverityNumber": pa.array([min(max(r.severity_number, 0), 255) for r in rows], pa.uint8()),
            "ServiceName": pa.array([r.service for r in rows], _STR),
            "Body": pa.array([body_text(r.body) for r in rows], _STR),
            "ResourceSchemaUrl": pa.array([r.resource_schema_url for r in rows], _STR),
            "ResourceAttributes": _map_array([r.resource_attributes for r in rows]),
            "ScopeSchemaUrl": pa.array([r.scope_schema_url for r in rows], _STR),
            "ScopeName": pa.array([r.scope_name for r in rows], _STR),
            "ScopeVersion": pa.array([r.scope_version for r in rows], _STR),
            "ScopeAttributes": _map_array([r.scope_attributes for r in rows]),
            "LogAttributes": _map_array([r.attributes for r in rows]),
            "EventName": pa.array([r.event_name for r in rows], _STR),
        }
    )
