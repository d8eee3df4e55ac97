"""The traces and analytics HTTP API (aiohttp, real server on loopback) over real chDB."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline.api import ApiContext, build_app
from pipeline.query.traces import TraceQueries
from pipeline.spans import SpanBatch
from pipeline.telemetry import Telemetry
from sinks.clickhouse import ClickHouseSinkConfig
from tests.trace_samples import HOUR, S, llm_trace, rag_trace, started_sink, tid

NOW = (time.time_ns() // S) * S


async def _client(queries: TraceQueries | None) -> TestClient:
    app = build_app(ApiContext(telemetry=Telemetry(CollectorRegistry()), queries=queries))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def api(clickhouse_dsn: str, chdb_database: str) -> AsyncIterator[TestClient]:
    sink = await started_sink(clickhouse_dsn, chdb_database)
    try:
        await sink.write(SpanBatch(rag_trace(NOW - HOUR, 1, user="alice"), "a"))
        await sink.write(
            SpanBatch(
                llm_trace(
                    NOW - 2 * HOUR, 2, service="api", model="gpt-4o-mini", duration_ms=50, cost=0.001, user="bob"
                ),
                "b",
            )
        )
    finally:
        await sink.close()
    queries = TraceQueries.from_sink_config(
        ClickHouseSinkConfig(dsn=clickhouse_dsn, database=chdb_database), "/unused", clock_ns=lambda: NOW
    )
    client = await _client(queries)
    yield client
    await client.close()
    await queries.close()


async def test_get_trace_returns_spans_tree_and_totals(api: TestClient):
    r = await api.get(f"/api/traces/{tid(1)}")
    assert r.status == 200
    body = await r.json()
    assert body["trace_id"] == tid(1) and len(body["spans"]) == 5
    assert body["tree"][0]["name"] == "rag-pipeline"
    assert body["totals"]["cost_usd"] == pytest.approx(0.01252) and body["totals"]["errors"] == 1


async def test_unknown_trace_is_404_and_malformed_id_400(api: TestClient):
    r = await api.get(f"/api/traces/{tid(77)}")
    assert r.status == 404 and (await r.json())["error"] == f"trace {tid(77)} not found"
    r = await api.get("/api/traces/xyz")
    assert r.status == 400 and "trace_id" in (await r.json())["error"]


async def test_list_traces_with_filters_and_cursor(api: TestClient):
    r = await api.get("/api/traces", params={"limit": "1"})
    assert r.status == 200
    page = await r.json()
    assert [t["trace_id"] for t in page["traces"]] == [tid(1)] and page["next"]
    r = await api.get("/api/traces", params={"limit": "1", "cursor": page["next"]})
    page2 = await r.json()
    assert [t["trace_id"] for t in page2["traces"]] == [tid(2)] and page2["next"] is None
    r = await api.get(
        "/api/traces",
        params={
            "user": "bob",
            "model": "gpt-4o-mini",
            "status": "ok",
            "min_cost": "0.0005",
            "since": "3h",
            "service": "api",
        },
    )
    assert [t["trace_id"] for t in (await r.json())["traces"]] == [tid(2)]
    r = await api.get("/api/traces", params={"status": "error"})
    assert [t["trace_id"] for t in (await r.json())["traces"]] == [tid(1)]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "abc"),
        ("limit", "0"),
        ("limit", "5000"),
        ("min_cost", "cheap"),
        ("min_cost", "-1"),
        ("status", "broken"),
        ("since", "yesterday"),
        ("cursor", "@@@"),
        ("colour", "red"),
    ],
)
async def test_bad_list_parameters_are_400_naming_the_parameter(api: TestClient, param: str, value: str):
    r = await api.get("/api/traces", params={param: value})
    assert r.status == 400
    assert (await r.json())["error"].startswith(f"{param}:")


async def test_cost_analytics_by_dimension(api: TestClient):
    r = await api.get("/api/analytics/cost", params={"by": "model", "since": "24h"})
    assert r.status == 200
    rows = {row["group"]: row for row in await r.json()}
    assert set(rows) == {"gpt-4o", "text-embedding-3-small", "gpt-4o-mini"}
    assert rows["gpt-4o"]["cost_usd"] == pytest.approx(0.0125) and rows["gpt-4o"]["calls"] == 1
    assert set(rows["gpt-4o"]) >= {"group", "cost_usd", "input_tokens", "output_tokens", "calls", "p50_ms", "p95_ms"}
    r = await api.get("/api/analytics/cost", params={"by": "user"})  # since defaults to 24h
    users = {row["group"]: row["cost_usd"] for row in await r.json()}
    assert users == {"alice": pytest.approx(0.01252), "bob": pytest.approx(0.001)}
    r = await api.get("/api/analytics/cost", params={"by": "user", "since": "90m"})
    assert [row["group"] for row in await r.json()] == ["alice"]
    for params, name in (({"by": "colour"}, "by"), ({"since": "soon"}, "since"), ({"x": "1"}, "x")):
        r = await api.get("/api/analytics/cost", params=params)
        assert r.status == 400 and (await r.json())["error"].startswith(f"{name}:")


async def test_without_a_store_the_endpoints_answer_503():
    client = await _client(None)
    try:
        for path in (f"/api/traces/{tid(1)}", "/api/traces", "/api/analytics/cost"):
            r = await client.get(path)
            assert r.status == 503 and "clickhouse" in (await r.json())["error"]
        r = await client.get("/api/traces/zzz")
        assert r.status == 400  # the id is checked first
    finally:
        await client.close()


async def test_an_unreachable_store_answers_503():
    from tests.services import free_port

    cfg = ClickHouseSinkConfig(dsn=f"http://u:p@127.0.0.1:{free_port()}/default")
    queries = TraceQueries.from_sink_config(cfg, "/unused")
    client = await _client(queries)
    try:
        r = await client.get("/api/traces")
        assert r.status == 503 and "unreachable" in (await r.json())["error"]
    finally:
        await client.close()
        await queries.close()
