"""The clickhouse sink against real chDB: what goes in comes out, once.

All tests share the session's chDB directory (one engine path per process) and isolate
themselves by database name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.component import SinkError
from pipeline.query.store import StoreLockedError, chdb_path, default_dsn, open_client
from pipeline.spans import Event, Link, Resource, Span, SpanBatch
from sinks import SINK_FACTORIES
from sinks.clickhouse import (
    ClickHouseSinkConfig,
    attr_text,
    is_bad_data,
    is_transient,
    redact_dsn,
    spans_to_arrow,
)
from tests.trace_samples import HOUR, MS, context, rag_trace, sid, started_sink, tid

ROOT = Path(__file__).resolve().parents[1]


def _now_ms() -> int:
    return (time.time_ns() - HOUR) // MS * MS


def _rich_spans(t0: int) -> list[Span]:
    res = Resource({"service.name": "svc-a", "host.name": "h1", "k8s.pod.uid": 7})
    return [
        Span(
            tid(1),
            sid(1),
            "root op",
            t0,
            t0 + 5 * MS,
            kind=2,
            resource=res,
            trace_state="vendor=1",
            scope_name="my.scope",
            scope_version="2.1",
            attributes={
                "s": "text",
                "b": True,
                "f": False,
                "i": 42,
                "x": 1.5,
                "l": ["a", 1, True],
                "d": {"k": [1, 2]},
                "raw": b"\x01\xff",
                "user.id": "alice",
                "session.id": "sess",
                "app.feature": "search",
                "tenant.id": "acme",
            },
            status_code=1,
            status_message="",
            events=[
                Event(t0 + 1 * MS, "exception", {"exception.type": "ValueError", "n": 3}),
                Event(t0 + 2 * MS, "empty"),
            ],
            links=[Link(tid(9), sid(9), "ts=1", {"why": "follows"}), Link(tid(8), sid(8))],
        ),
        Span(
            tid(1),
            sid(2),
            "chat gpt-4o",
            t0 + 1 * MS,
            t0 + 4 * MS,
            parent_span_id=sid(1),
            kind=3,
            resource=res,
            status_code=2,
            status_message="boom",
            attributes={
                "gen_ai.provider.name": "openai",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": "300",
                "gen_ai.usage.cache_read.input_tokens": 200,
                "gen_ai.usage.cache_creation.input_tokens": 50,
                "gen_ai.usage.cost_usd": 0.0123,
                "gen_ai.conversation.id": "c-1",
            },
        ),
        # unpriced GenAI span, an unknown kind, no resource service name
        Span(
            tid(2),
            sid(3),
            "embed",
            t0 + 2 * MS,
            t0 + 3 * MS,
            kind=99,
            resource=Resource({}),
            attributes={"gen_ai.system": "cohere", "gen_ai.request.model": "embed-v3", "gen_ai.usage.input_tokens": -5},
        ),
    ]


COLUMNS = (
    "toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, "
    "ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
    "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`), `Events.Name`, `Events.Attributes`, "
    "`Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`, GenAiProvider, GenAiOperation, "
    "RequestModel, ResponseModel, InputTokens, OutputTokens, CacheReadTokens, CacheCreationTokens, CostUsd, "
    "UserId, SessionId, ConversationId, Feature, TenantId"
)


async def test_rows_equal_spans_written_with_all_fields_maps_events_and_links(clickhouse_dsn: str, chdb_database: str):
    t0 = _now_ms()
    spans = _rich_spans(t0)
    sink = await started_sink(clickhouse_dsn, chdb_database)
    try:
        await sink.write(SpanBatch(spans, "b-1"))
        rows = sink._client.query(f"SELECT {COLUMNS} FROM {chdb_database}.otel_traces ORDER BY SpanId").result_rows
    finally:
        await sink.close()
    assert len(rows) == len(spans)
    root, llm, emb = rows
    assert root[:8] == (t0, tid(1), sid(1), "", "vendor=1", "root op", "Server", "svc-a")
    assert root[8] == {"service.name": "svc-a", "host.name": "h1", "k8s.pod.uid": "7"}
    assert root[9:11] == ("my.scope", "2.1")
    assert root[11] == {
        "s": "text",
        "b": "true",
        "f": "false",
        "i": "42",
        "x": "1.5",
        "l": '["a",1,true]',
        "d": '{"k":[1,2]}',
        "raw": "01ff",
        "user.id": "alice",
        "session.id": "sess",
        "app.feature": "search",
        "tenant.id": "acme",
    }
    assert root[12:15] == (5 * MS, "Ok", "")
    assert root[15:18] == (
        [t0 + MS, t0 + 2 * MS],
        ["exception", "empty"],
        [{"exception.type": "ValueError", "n": "3"}, {}],
    )
    assert root[18:22] == ([tid(9), tid(8)], [sid(9), sid(8)], ["ts=1", ""], [{"why": "follows"}, {}])
    assert root[22:31] == ("", "", "", "", 0, 0, 0, 0, None)
    # TenantId is the resource's tenant.id (the ingest token's); a span-level tenant.id is an app
    # attribute and leaves the span in tenant "default" (pipeline/tenants.py).
    assert root[31:] == ("alice", "sess", "", "search", "default")

    assert llm[3] == sid(1) and llm[6] == "Client" and llm[13:15] == ("Error", "boom")
    assert llm[22:31] == ("openai", "chat", "gpt-4o", "gpt-4o-2024-08-06", 1200, 300, 200, 50, 0.0123)
    assert llm[33] == "c-1"
    assert llm[15:22] == ([], [], [], [], [], [], [])

    # gen_ai.system falls back for the provider; unpriced stays NULL (never 0); negative tokens -> 0
    assert emb[6] == "Unspecified" and emb[7] == "unknown_service"
    assert emb[22] == "cohere" and emb[24] == "embed-v3" and emb[26] == 0 and emb[30] is None


async def test_redelivered_batch_is_stored_once_including_the_summary(clickhouse_dsn: str, chdb_database: str):
    t0 = _now_ms()
    spans = rag_trace(t0, 1) + rag_trace(t0 + MS, 2)
    sink = await started_sink(clickhouse_dsn, chdb_database, max_insert_rows=3)  # 10 spans -> 4 chunks
    try:
        for _ in range(3):
            await sink.write(SpanBatch(spans, "queue-7/traces"))
        c = sink._client
        assert c.query(f"SELECT count() FROM {chdb_database}.otel_traces").result_rows[0][0] == 10
        summary = c.query(
            f"SELECT TraceId, sum(SpanCount), sum(CostUsd), sum(InputTokens) "
            f"FROM {chdb_database}.otel_traces_trace_summary GROUP BY TraceId ORDER BY TraceId"
        ).result_rows
        assert [(r[0], r[1], round(r[2], 8), r[3]) for r in summary] == [
            (tid(1), 5, 0.01252, 3000),
            (tid(2), 5, 0.01252, 3000),
        ]
        # a different batch id is a different batch: stored again (dedup is per batch, not per content)
        await sink.write(SpanBatch(spans[:1], "queue-8/traces"))
        assert c.query(f"SELECT count() FROM {chdb_database}.otel_traces").result_rows[0][0] == 11
        assert c.query(f"SELECT sum(SpanCount) FROM {chdb_database}.otel_traces_trace_summary").result_rows[0][0] == 11
    finally:
        await sink.close()


async def test_large_batches_are_split_into_chunks_of_max_insert_rows(clickhouse_dsn: str, chdb_database: str):
    t0 = _now_ms()
    spans = [s for n in range(1, 8) for s in rag_trace(t0 + n * MS, n)]  # 35 spans
    sink = await started_sink(clickhouse_dsn, chdb_database, max_insert_rows=10)
    try:
        await sink.write(SpanBatch(spans, "big"))
        c = sink._client
        assert c.query(f"SELECT count(), uniqExact(SpanId) FROM {chdb_database}.otel_traces").result_rows[0] == (35, 35)
        parts = c.query(
            "SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'otel_traces'",
            parameters={"db": chdb_database},
        ).result_rows[0][0]
        assert parts >= 4  # four inserts (unless merged already)... at least not one
    finally:
        await sink.close()


async def test_rows_older_than_ttl_days_are_dropped_and_none_keeps_them(clickhouse_dsn: str, chdb_database: str):
    now = _now_ms()
    old = now - 40 * 24 * HOUR
    spans = rag_trace(now, 1) + rag_trace(old, 2)
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=30)
    keep = await started_sink(clickhouse_dsn, chdb_database, table="forever", ttl_days=None)
    try:
        await sink.write(SpanBatch(spans, "ttl"))
        await keep.write(SpanBatch(spans, "ttl"))
        c = sink._client
        c.command(f"OPTIMIZE TABLE {chdb_database}.otel_traces FINAL")
        kept = c.query(f"SELECT DISTINCT TraceId FROM {chdb_database}.otel_traces").result_rows
        assert kept == [(tid(1),)]
        ddl = c.query(f"SHOW CREATE TABLE {chdb_database}.otel_traces").result_rows[0][0]
        assert "toIntervalDay(30)" in ddl
        forever = c.query(f"SELECT uniqExact(TraceId) FROM {chdb_database}.forever").result_rows[0][0]
        assert forever == 2
        assert "TTL" not in c.query(f"SHOW CREATE TABLE {chdb_database}.forever").result_rows[0][0]
        # the drop is counted, by the sink with the retention only
        dropped = sink.ctx.telemetry.dropped_spans.labels("older_than_retention")._value.get()
        assert dropped == len(rag_trace(old, 2))
        assert keep.ctx.telemetry.dropped_spans.labels("older_than_retention")._value.get() == 0
    finally:
        await sink.close()
        await keep.close()


async def test_spans_table_keeps_the_otel_exporter_columns_and_types(clickhouse_dsn: str, chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database)
    try:
        cols = dict(
            sink._client.query(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'otel_traces'",
                parameters={"db": chdb_database},
            ).result_rows
        )
        ddl = sink._client.query(f"SHOW CREATE TABLE {chdb_database}.otel_traces").result_rows[0][0]
    finally:
        await sink.close()
    exporter = {
        "Timestamp": "DateTime64(9)",
        "TraceId": "String",
        "SpanId": "String",
        "ParentSpanId": "String",
        "TraceState": "String",
        "SpanName": "LowCardinality(String)",
        "SpanKind": "LowCardinality(String)",
        "ServiceName": "LowCardinality(String)",
        "ResourceAttributes": "Map(LowCardinality(String), String)",
        "ScopeName": "String",
        "ScopeVersion": "String",
        "SpanAttributes": "Map(LowCardinality(String), String)",
        "Duration": "UInt64",
        "StatusCode": "LowCardinality(String)",
        "StatusMessage": "String",
        "Events.Timestamp": "Array(DateTime64(9))",
        "Events.Name": "Array(LowCardinality(String))",
        "Events.Attributes": "Array(Map(LowCardinality(String), String))",
        "Links.TraceId": "Array(String)",
        "Links.SpanId": "Array(String)",
        "Links.TraceState": "Array(String)",
        "Links.Attributes": "Array(Map(LowCardinality(String), String))",
    }
    assert {k: cols[k] for k in exporter} == exporter
    assert cols["CostUsd"] == "Nullable(Float64)" and cols["InputTokens"] == "UInt64"
    for index in ("idx_trace_id", "idx_res_attr_key", "idx_span_attr_value", "idx_duration"):
        assert index in ddl
    assert "PARTITION BY toDate(Timestamp)" in ddl
    assert "ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)" in ddl


async def test_a_span_that_cannot_be_encoded_is_dropped_not_its_batch(clickhouse_dsn: str, chdb_database: str):
    t0 = _now_ms()
    ok = Span(tid(1), sid(1), "fine", t0, t0 + 10)
    huge = Span(tid(1), sid(2), "times beyond int64", 2**64 - 1, 2**64 - 1)  # clamped, still stored
    bad = Span(tid(1), sid(3), "lone surrogate \ud800", t0, t0 + 10)  # not encodable as UTF-8
    assert spans_to_arrow([ok, huge]).num_rows == 2
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None)
    try:
        await sink.write(SpanBatch([ok, bad, huge], "mixed"))
        stored = sink._client.query(f"SELECT SpanId FROM {chdb_database}.otel_traces ORDER BY SpanId").result_rows
        dropped = sink.ctx.telemetry.dropped_spans.labels("unencodable")._value.get()
    finally:
        await sink.close()
    assert stored == [(sid(1),), (sid(2),)]
    assert dropped == 1
    assert attr_text(["x", {"y": None}]) == '["x",{"y":null}]'


def test_errors_are_classified_transient_or_bad_data():
    assert is_transient(OperationalError("connection refused"))
    assert is_transient(DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)"))
    assert not is_transient(DatabaseError("Code: 60. DB::Exception: Table x does not exist (UNKNOWN_TABLE)"))
    assert is_bad_data(DatabaseError("Code: 53. DB::Exception: Type mismatch (TYPE_MISMATCH)"))
    assert not is_bad_data(DatabaseError("Code: 60. DB::Exception: Table x does not exist (UNKNOWN_TABLE)"))


async def test_a_dropped_table_fails_the_write_retryably(clickhouse_dsn: str, chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database, retries=0)
    try:
        sink._client.command(f"DROP TABLE {chdb_database}.otel_traces")
        with pytest.raises(SinkError) as err:
            await sink.write(SpanBatch(rag_trace(_now_ms(), 1), "b"))
        assert err.value.retryable  # an operator problem: keep the batch, do not drop it
        assert "rag" not in str(err.value) and "u1" not in str(err.value)  # no span data in the message
    finally:
        await sink.close()


def test_config_defaults_validation_and_registry(tmp_path: Path):
    cfg = ClickHouseSinkConfig()
    assert (cfg.dsn, cfg.database, cfg.table, cfg.ttl_days, cfg.create_schema) == (
        None,
        "tracepipe",
        "otel_traces",
        30,
        True,
    )
    assert SINK_FACTORIES["clickhouse"].config_model is ClickHouseSinkConfig
    for bad in (
        {"table": "x; DROP"},
        {"database": "1db"},
        {"ttl_days": 0},
        {"max_insert_rows": 0},
        {"dsn": "mysql://x"},
        {"unknown": 1},
    ):
        with pytest.raises(ValueError):
            ClickHouseSinkConfig(**bad)
    assert default_dsn(tmp_path) == f"chdb://{tmp_path.resolve()}/clickhouse"
    assert chdb_path(f"chdb://{tmp_path}/x") == str(Path(tmp_path, "x").resolve())


async def test_a_second_process_on_the_locked_directory_gets_store_locked_error(chdb_dsn: str, chdb_database: str):
    sink = await started_sink(chdb_dsn, chdb_database)  # this process holds the engine
    code = (
        "import json, sys\n"
        "from pipeline.query.store import open_client, StoreLockedError\n"
        "try:\n"
        "    open_client(sys.argv[1])\n"
        "    print(json.dumps({'opened': True}))\n"
        "except StoreLockedError as e:\n"
        "    print(json.dumps({'locked': str(e)}))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, chdb_dsn], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    finally:
        await sink.close()
    result = json.loads(out.stdout.strip().splitlines()[-1])
    path = chdb_path(chdb_dsn)
    assert result == {
        "locked": f"the data directory {path} is in use by another process "
        "(is `tracepipe run` running? its API answers the query commands)"
    }
    assert StoreLockedError(path).path == path
    # the same process opens the same path fine (clients share the engine)
    client = open_client(chdb_dsn)
    client.close()


async def test_an_unreachable_server_at_start_is_retried_on_write_without_leaking_the_password():
    from tests.services import free_port

    dsn = f"http://ingest:s3cret@127.0.0.1:{free_port()}/default"
    cfg = ClickHouseSinkConfig(dsn=dsn, retries=0)
    sink = SINK_FACTORIES["clickhouse"].create("clickhouse", cfg, context())
    await sink.start()  # nothing listens: not fatal, not ready
    try:
        assert not sink.ready()
        with pytest.raises(SinkError) as err:
            await sink.write(SpanBatch(rag_trace(_now_ms(), 1), "b"))
        assert err.value.retryable
        assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
    finally:
        await sink.close()
    assert redact_dsn(dsn).startswith("http://***@127.0.0.1:")
    assert redact_dsn("chdb:///data/ch") == "chdb:///data/ch"
