"""Sessions and users queries over real chDB: turns in order, conversation id fallback, tenant
filter, per-interval spend, and the API's parameter errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from pipeline.api import ApiContext, build_app
from pipeline.query import sessions as sq
from pipeline.query.traces import TraceQueries
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.telemetry import Telemetry
from sinks.clickhouse import ClickHouseSinkConfig
from tests.trace_samples import HOUR, MS, S, sid, started_sink, tid

NOW = (time.time_ns() // S) * S


def turn(t0: int, n: int, *, ids: dict[str, str], tenant: str, cost: float, inp: int,
         error: bool = False) -> list[Span]:
    """Root + LLM span, both carrying the accounting ids (as the context processor leaves them)."""
    res = Resource({"service.name": "chat", "tenant.id": tenant})
    common = {**ids, "tenant.id": tenant}
    root = Span(tid(n), sid(n * 10 + 1), "POST /chat", t0, t0 + 900 * MS, resource=res, attributes=dict(common))
    llm = Span(tid(n), sid(n * 10 + 2), "chat gpt-4o", t0 + MS, t0 + 800 * MS, parent_span_id=sid(n * 10 + 1),
               resource=res, status_code=2 if error else 0, attributes={
        **common, "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": 10, "gen_ai.usage.cost_usd": cost,
    })  # fmt: skip
    return [root, llm]


@pytest.fixture
async def queries(clickhouse_dsn: str, chdb_database: str) -> AsyncIterator[TraceQueries]:
    sink = await started_sink(clickhouse_dsn, chdb_database)
    try:
        spans: list[Span] = []
        # session s-a (tenant t1): two turns of ann, the second one failed
        spans += turn(NOW - 3 * HOUR, 1, ids={"session.id": "s-a", "user.id": "ann"}, tenant="t1", cost=0.01, inp=100)
        spans += turn(NOW - 2 * HOUR, 2, ids={"session.id": "s-a", "user.id": "ann"}, tenant="t1", cost=0.02,
                      inp=200, error=True)
        # a conversation known only by gen_ai.conversation.id (tenant t2)
        spans += turn(NOW - HOUR, 3, ids={"gen_ai.conversation.id": "conv-b", "user.id": "bo"}, tenant="t2",
                      cost=0.5, inp=300)
        await sink.write(SpanBatch(spans, "sessions-1"))
    finally:
        await sink.close()
    q = TraceQueries.from_sink_config(ClickHouseSinkConfig(dsn=clickhouse_dsn, database=chdb_database), "/unused",
                                      clock_ns=lambda: NOW)
    yield q
    await q.close()


async def test_session_turns_come_in_order_with_their_figures_and_totals(queries: TraceQueries) -> None:
    s = await sq.get_session(queries, "s-a")
    assert s is not None
    assert [(t["turn"], t["trace_id"]) for t in s["turns"]] == [(1, tid(1)), (2, tid(2))]
    assert [t["input_tokens"] for t in s["turns"]] == [100, 200]
    assert [t["errors"] for t in s["turns"]] == [0, 1]
    assert s["turns"][0]["duration_ns"] == 900 * MS and s["turns"][0]["models"] == ["gpt-4o"]
    assert s["totals"]["cost_usd"] == pytest.approx(0.03)
    assert (s["totals"]["turns"], s["totals"]["errors"], s["users"]) == (2, 1, ["ann"])
    assert await sq.get_session(queries, "nope") is None


async def test_a_conversation_id_alone_makes_a_session(queries: TraceQueries) -> None:
    s = await sq.get_session(queries, "conv-b")
    assert s is not None and [t["trace_id"] for t in s["turns"]] == [tid(3)]
    listing = await sq.list_sessions(queries, since="1d")
    assert [x["session_id"] for x in listing["sessions"]] == ["conv-b", "s-a"]  # newest activity first
    assert {x["session_id"]: x["turns"] for x in listing["sessions"]} == {"conv-b": 1, "s-a": 2}


async def test_the_tenant_argument_scopes_every_session_and_user_query(queries: TraceQueries) -> None:
    assert [x["session_id"] for x in (await sq.list_sessions(queries, tenant="t1"))["sessions"]] == ["s-a"]
    assert await sq.get_session(queries, "conv-b", tenant="t1") is None
    assert await sq.get_user(queries, "bo", tenant="t1") is None
    assert (await sq.get_user(queries, "bo", tenant="t2"))["totals"]["traces"] == 1


async def test_a_users_spend_over_time_by_hour(queries: TraceQueries) -> None:
    u = await sq.get_user(queries, "ann", interval="hour", since="1d")
    assert u is not None
    assert [s["traces"] for s in u["series"]] == [1, 1]
    assert [s["cost_usd"] for s in u["series"]] == [pytest.approx(0.01), pytest.approx(0.02)]
    assert u["totals"]["cost_usd"] == pytest.approx(0.03) and u["totals"]["errors"] == 1
    assert {t["trace_id"] for t in u["traces"]} == {tid(1), tid(2)}
    with pytest.raises(ValueError, match="interval"):
        await sq.get_user(queries, "ann", interval="week")


async def test_api_answers_sessions_and_users_and_names_bad_parameters(queries: TraceQueries) -> None:
    app = build_app(ApiContext(telemetry=Telemetry(CollectorRegistry()), queries=queries))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        body: Any = await (await client.get("/api/sessions/s-a")).json()
        assert [t["trace_id"] for t in body["turns"]] == [tid(1), tid(2)]
        assert (await client.get("/api/sessions/missing")).status == 404
        r = await client.get("/api/sessions?color=red")
        assert r.status == 400 and "color" in (await r.json())["error"]
        r = await client.get("/api/users/ann?interval=week")
        assert r.status == 400 and "interval" in (await r.json())["error"]
        r = await client.get("/api/users/ann?since=1d")
        assert r.status == 200 and (await r.json())["totals"]["traces"] == 2
        r = await client.get("/api/traces?session=s-a")
        assert {t["trace_id"] for t in (await r.json())["traces"]} == {tid(1), tid(2)}
        rows = await (await client.get("/api/analytics/cost?by=tenant&since=1d")).json()
        assert {r["group"]: r["cost_usd"] for r in rows} == {"t2": pytest.approx(0.5), "t1": pytest.approx(0.03)}
    finally:
        await client.close()
