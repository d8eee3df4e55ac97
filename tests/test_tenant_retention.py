"""Retention per tenant on chDB: `tenant_ttl_days` TTL rules drop the right rows on a merge."""

from __future__ import annotations

import time

import pytest

from pipeline.config import ConfigError, build_config
from pipeline.spans import Resource, Span, SpanBatch
from sinks.clickhouse import sync_retention, ttl_expression
from tests.trace_samples import S, started_sink

DAY = 86_400 * S


def _span(n: int, tenant: str | None, age_days: float, now: int) -> Span:
    attrs = {"service.name": "svc", **({"tenant.id": tenant} if tenant else {})}
    start = now - int(age_days * DAY)
    return Span(trace_id=f"{n:032x}", span_id=f"{n:016x}", name="op", start_ns=start, end_ns=start + S,
                attributes={"user.id": f"{tenant}-{age_days:g}"}, resource=Resource(attrs))


def _users(sink, table: str, column: str) -> set[str]:
    return {r[0] for r in sink._client.query(f"SELECT {column} FROM {table}").result_rows}


AGES = {"short": (1, 10), "forever": (1, 400), None: (1, 10, 40)}
KEPT = {"short-1", "forever-1", "forever-400", "None-1", "None-10"}  # short: 7 days, forever: -, others: 30
RETENTION = {"ttl_days": 30, "tenant_ttl_days": {"short": 7, "forever": None}}


def _spans(now: int) -> list[Span]:
    rows = [(t, age) for t, tenant_ages in AGES.items() for age in tenant_ages]
    return [_span(i, t, age, now) for i, (t, age) in enumerate(rows)]


async def test_rows_past_their_tenants_retention_are_dropped_by_a_merge(clickhouse_dsn: str, chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database, **RETENTION)
    try:
        await sink.write(SpanBatch(_spans(time.time_ns()), "r-1"))
        spans_table, summary = f"{chdb_database}.otel_traces", f"{chdb_database}.otel_traces_trace_summary"
        for table in (spans_table, summary):  # TTL is applied when parts merge; FINAL forces one
            sink._client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert _users(sink, spans_table, "UserId") == KEPT
        assert _users(sink, summary, "UserId") == KEPT
        # Counted as they arrive, each by its tenant's retention: short-10, None-40 (forever-400 is kept).
        assert sink.ctx.telemetry.dropped_spans.labels("older_than_retention")._value.get() == 2
    finally:
        await sink.close()


async def test_stored_rows_expire_by_tenant_once_the_retention_is_configured(clickhouse_dsn: str, chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None)
    spans_table, summary = f"{chdb_database}.otel_traces", f"{chdb_database}.otel_traces_trace_summary"
    try:
        await sink.write(SpanBatch(_spans(time.time_ns()), "r-1"))
        assert len(_users(sink, spans_table, "UserId")) == 7
    finally:
        await sink.close()
    sink = await started_sink(clickhouse_dsn, chdb_database, **RETENTION)  # ALTER TABLE ... MODIFY TTL
    try:
        for table in (spans_table, summary):
            sink._client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert _users(sink, spans_table, "UserId") == KEPT
        assert _users(sink, summary, "UserId") == KEPT
        create = sink._client.query(f"SHOW CREATE TABLE {spans_table}").result_rows[0][0]
        assert "WHERE TenantId = 'short'" in create and "ttl_only_drop_parts = 0" in create
        assert sync_retention(sink._client, sink.cfg) == []  # in line now: a restart alters nothing
    finally:
        await sink.close()


def test_ttl_expression_shapes() -> None:
    assert ttl_expression("toDateTime(Timestamp)", 30) == "toDateTime(Timestamp) + toIntervalDay(30)"
    assert ttl_expression("toDateTime(Timestamp)", None) == ""
    assert ttl_expression("t", None, {"a": 7, "b": None}) == "t + toIntervalDay(7) WHERE TenantId = 'a'"
    assert ttl_expression("t", 30, {"b": None}) == "t + toIntervalDay(30) WHERE TenantId NOT IN ('b')"


def test_tenant_ttl_days_rejects_names_that_are_not_tenants() -> None:
    raw = {
        "sinks": {"clickhouse": {"tenant_ttl_days": {"x'; DROP": 7}}},
        "service": {"pipelines": {"p": {"sinks": ["clickhouse"]}}},
    }
    with pytest.raises(ConfigError) as e:
        build_config(raw)
    assert "sinks.clickhouse.tenant_ttl_days" in str(e.value) and "tenant name" in str(e.value)
