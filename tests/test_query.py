"""The query layer over real chDB: trace trees with costs, trace lists, spend by dimension, renderings."""

from __future__ import annotations

import time

import pytest

from pipeline.query.render import fmt_duration, fmt_usd, render_cost, render_trace, render_trace_list
from pipeline.query.store import StoreMissingError, open_client
from pipeline.query.traces import TraceQueries, decode_cursor, encode_cursor, parse_since
from pipeline.spans import SpanBatch
from sinks.clickhouse import ClickHouseSinkConfig
from tests.trace_samples import HOUR, MS, S, llm_trace, rag_trace, sid, started_sink, tid

NOW = (time.time_ns() // S) * S  # the injected clock of these tests


def _queries(dsn: str, database: str, **kw) -> TraceQueries:
    return TraceQueries.from_sink_config(
        ClickHouseSinkConfig(dsn=dsn, database=database), "/unused", clock_ns=lambda: NOW, **kw
    )


async def _store(dsn: str, database: str, *batches) -> None:
    sink = await started_sink(dsn, database)
    try:
        for i, spans in enumerate(batches):
            await sink.write(SpanBatch(spans, f"b{i}"))
    finally:
        await sink.close()


async def test_three_level_trace_yields_tree_with_per_span_and_subtree_costs(clickhouse_dsn: str, chdb_database: str):
    t0 = NOW - HOUR
    spans = rag_trace(t0, 1)
    # the same trace arriving in two batches (root last) still forms one tree
    await _store(clickhouse_dsn, chdb_database, spans[1:], spans[:1])
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        trace = await q.get_trace(tid(1).upper())
    finally:
        await q.close()
    assert trace is not None and trace["trace_id"] == tid(1)
    by_name = {s["name"]: s for s in trace["spans"]}
    assert len(trace["spans"]) == 5
    synth = by_name["synthesis"]
    assert synth["parent_span_id"] == by_name["rag-pipeline"]["span_id"]
    assert (synth["model"], synth["response_model"], synth["provider"], synth["operation"]) == (
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "openai",
        "chat",
    )
    assert (synth["input_tokens"], synth["output_tokens"], synth["cache_read_tokens"]) == (2000, 500, 300)
    assert synth["cost_usd"] == pytest.approx(0.0125) and synth["status_code"] == "Error"
    assert synth["status_message"] == "rate limited once" and synth["duration_ns"] == 690 * MS
    assert synth["events"] == [
        {"time_ns": t0 + 2400 * MS, "name": "gen_ai.choice", "attributes": {"index": "0", "finish_reason": "stop"}}
    ]
    assert synth["conversation_id"] == "conv-9" and synth["kind"] == "Client"
    assert by_name["vector_search"]["cost_usd"] is None and by_name["vector_search"]["model"] is None
    root_span = by_name["rag-pipeline"]
    assert root_span["user_id"] == "u1" and root_span["attributes"]["app.feature"] == "support"
    assert root_span["resource_attributes"]["deployment.environment"] == "test"

    [root] = trace["tree"]
    assert root["name"] == "rag-pipeline" and root["cost_usd"] is None
    assert [c["name"] for c in root["children"]] == ["retrieval", "synthesis"]
    retrieval, synthesis = root["children"]
    assert [c["name"] for c in retrieval["children"]] == ["embedding", "vector_search"]
    assert retrieval["cost_usd"] is None
    assert retrieval["subtree"]["cost_usd"] == pytest.approx(0.00002)
    assert retrieval["subtree"]["input_tokens"] == 1000 and retrieval["subtree"]["spans"] == 3
    assert retrieval["children"][1]["subtree"]["cost_usd"] is None  # unpriced stays unpriced
    assert synthesis["cost_usd"] == pytest.approx(0.0125) and synthesis["subtree"]["errors"] == 1
    assert root["subtree"]["cost_usd"] == pytest.approx(0.01252)
    assert root["subtree"]["spans"] == 5

    totals = trace["totals"]
    assert totals["cost_usd"] == pytest.approx(0.01252)
    assert (totals["input_tokens"], totals["output_tokens"], totals["cache_read_tokens"]) == (3000, 500, 300)
    assert (totals["spans"], totals["errors"], totals["duration_ns"], totals["llm_calls"]) == (5, 1, 2500 * MS, 2)


async def test_rendered_tree_text(clickhouse_dsn: str, chdb_database: str):
    await _store(clickhouse_dsn, chdb_database, rag_trace(NOW - HOUR, 1))
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        trace = await q.get_trace(tid(1))
    finally:
        await q.close()
    assert render_trace(trace, waterfall=False) == (
        "rag-pipeline (2.5s, $0.0125)\n"
        "├── retrieval (1.8s, $0.00002)\n"
        "│   ├── embedding (200ms, text-embedding-3-small, 1000 in, $0.00002)\n"
        "│   └── vector_search (1.58s)\n"
        "└── synthesis (690ms, gpt-4o, 2000 in / 500 out (+300 cached), $0.0125) ✗ ERROR: rate limited once\n"
        "total: 5 spans, 1 error, 2.5s, 3000 in / 500 out (+300 cached) tokens, $0.0125"
    )


def test_formatting_of_money_and_durations():
    assert [fmt_usd(v) for v in (0.025, 1.5, 0.00002, 0, None, 12.345)] == [
        "$0.025",
        "$1.50",
        "$0.00002",
        "$0",
        "-",
        "$12.35",
    ]
    assert [fmt_duration(v) for v in (2.5e9, 200e6, 1.58e9, 185e9, 850e3, 12)] == [
        "2.5s",
        "200ms",
        "1.58s",
        "3m05s",
        "850µs",
        "12ns",
    ]


async def test_unknown_malformed_and_missing_store(clickhouse_dsn: str, chdb_database: str, tmp_path):
    await _store(clickhouse_dsn, chdb_database, rag_trace(NOW - HOUR, 1))
    q = _queries(clickhouse_dsn, chdb_database)
    empty = _queries(clickhouse_dsn, chdb_database + "_nothing_here")
    try:
        assert await q.get_trace(tid(99)) is None
        with pytest.raises(ValueError, match="trace_id"):
            await q.get_trace("not-a-trace-id")
        with pytest.raises(ValueError, match="since"):
            await q.cost_by("model", since="yesterday")
        with pytest.raises(ValueError, match="by"):
            await q.cost_by("color")
        with pytest.raises(ValueError, match="cursor"):
            await q.list_traces(cursor="garbage!")
        # a store nobody has written to yet answers empty, not an error
        assert await empty.get_trace(tid(1)) is None
        assert await empty.list_traces() == {"traces": [], "next": None}
        assert await empty.cost_by("user") == []
    finally:
        await q.close()
        await empty.close()
    # reading a chDB directory that does not exist says so (and does not create it)
    missing = TraceQueries.from_sink_config(ClickHouseSinkConfig(dsn=f"chdb://{tmp_path}/typo"), "/unused")
    try:
        with pytest.raises(StoreMissingError, match="no tracepipe data at"):
            await missing.list_traces()
    finally:
        await missing.close()
    assert not (tmp_path / "typo").exists()


def test_since_parsing():
    assert parse_since("15m") == 15 * 60 * S
    assert parse_since("24h") == 24 * HOUR
    assert parse_since(" 7d ") == 7 * 24 * HOUR
    assert parse_since("1.5h") == 90 * 60 * S
    for bad in ("", "7", "d7", "-1h", "0m", "5y", "999999w"):
        with pytest.raises(ValueError, match="since"):
            parse_since(bad)
    assert decode_cursor(encode_cursor(123, tid(5))) == (123, tid(5))


def _mixed_traces() -> list[list]:
    """Six traces, newest first by n: service/model/user/status/cost vary."""
    base = NOW - 2 * HOUR
    return [
        llm_trace(
            base + 10 * S, 1, service="api", model="gpt-4o", duration_ms=100, cost=0.10, user="alice", feature="chat"
        ),
        llm_trace(
            base + 20 * S,
            2,
            service="api",
            model="gpt-4o",
            duration_ms=200,
            cost=0.20,
            user="bob",
            feature="chat",
            ok=False,
        ),
        llm_trace(
            base + 30 * S,
            3,
            service="batch",
            model="claude-3-5-sonnet",
            duration_ms=300,
            cost=0.30,
            user="alice",
            feature="summarize",
            provider="anthropic",
        ),
        llm_trace(
            base + 40 * S, 4, service="api", model="gpt-4o", duration_ms=400, cost=0.40, user="carol", feature="chat"
        ),
        llm_trace(
            base + 50 * S,
            5,
            service="batch",
            model="embed-v3",
            duration_ms=50,
            cost=None,
            user="alice",
            feature="search",
            provider="cohere",
            operation="embeddings",
        ),
        # three days ago: outside a 24h window
        llm_trace(
            NOW - 72 * HOUR, 6, service="api", model="gpt-4o", duration_ms=1000, cost=1.0, user="dave", feature="chat"
        ),
    ]


async def test_list_traces_filters_and_paginates(clickhouse_dsn: str, chdb_database: str):
    await _store(clickhouse_dsn, chdb_database, *_mixed_traces())
    q = _queries(clickhouse_dsn, chdb_database)

    async def ids(**kw) -> list[int]:
        return [int(t["trace_id"], 16) for t in (await q.list_traces(**kw))["traces"]]

    try:
        assert await ids() == [5, 4, 3, 2, 1, 6]  # newest first
        assert await ids(since="24h") == [5, 4, 3, 2, 1]
        assert await ids(service="batch") == [5, 3]
        assert await ids(model="gpt-4o") == [4, 2, 1, 6]
        assert await ids(user="alice") == [5, 3, 1]
        assert await ids(status="error") == [2]
        assert await ids(status="ok") == [5, 4, 3, 1, 6]
        assert await ids(status="unset") == []
        assert await ids(min_cost=0.25) == [4, 3, 6]  # unpriced trace 5 never matches a cost floor
        assert await ids(model="gpt-4o", since="24h", min_cost=0.15) == [4, 2]

        page = await q.list_traces(limit=1, user="alice")
        t = page["traces"][0]
        assert (t["trace_id"], t["root_name"], t["root_service"], t["status"], t["spans"]) == (
            tid(5),
            "handle",
            "batch",
            "Ok",
            2,
        )
        assert t["cost_usd"] is None and t["models"] == ["embed-v3"] and t["feature"] == "search"
        assert t["duration_ns"] == 55 * MS and t["llm_calls"] == 1 and t["input_tokens"] == 100

        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = await q.list_traces(limit=2, cursor=cursor)
            seen += [int(t["trace_id"], 16) for t in page["traces"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == [5, 4, 3, 2, 1, 6] and pages == 3
        assert await ids(limit=2, offset=2) == [3, 2]
        with pytest.raises(ValueError, match="limit"):
            await q.list_traces(limit=0)
        with pytest.raises(ValueError, match="status"):
            await q.list_traces(status="weird")
        with pytest.raises(ValueError, match="min_cost"):
            await q.list_traces(min_cost=-1)
    finally:
        await q.close()


async def test_cost_by_every_dimension_with_percentiles(clickhouse_dsn: str, chdb_database: str):
    await _store(clickhouse_dsn, chdb_database, *_mixed_traces())
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        by = {
            d: {r["group"]: r for r in await q.cost_by(d, since="24h")}
            for d in ("model", "service", "user", "feature", "operation", "provider")
        }
        everything = {r["group"]: r for r in await q.cost_by("model", since="7d")}
        rows = await q.cost_by("model", since="24h")
    finally:
        await q.close()
    gpt = by["model"]["gpt-4o"]
    assert gpt["calls"] == 3 and gpt["cost_usd"] == pytest.approx(0.70)
    assert (gpt["input_tokens"], gpt["output_tokens"], gpt["traces"]) == (300, 30, 3)
    # LLM span durations 100, 200, 400 ms: p50 200, p95 interpolated 380
    assert gpt["p50_ms"] == pytest.approx(200) and gpt["p95_ms"] == pytest.approx(380)
    assert by["model"]["embed-v3"]["cost_usd"] is None  # unpriced, not 0
    assert [r["group"] for r in rows] == ["gpt-4o", "claude-3-5-sonnet", "embed-v3"]  # by cost, unpriced last
    assert everything["gpt-4o"]["calls"] == 4 and everything["gpt-4o"]["cost_usd"] == pytest.approx(1.70)

    assert by["service"]["api"]["cost_usd"] == pytest.approx(0.70) and by["service"]["api"]["calls"] == 3
    assert by["service"]["batch"]["cost_usd"] == pytest.approx(0.30) and by["service"]["batch"]["calls"] == 2
    assert by["operation"]["chat"]["calls"] == 4 and by["operation"]["embeddings"]["calls"] == 1
    assert by["provider"]["anthropic"]["cost_usd"] == pytest.approx(0.30)
    assert by["provider"]["cohere"]["cost_usd"] is None

    # user/feature: attribution from the root span, cost from the child LLM spans
    alice = by["user"]["alice"]
    assert alice["cost_usd"] == pytest.approx(0.40) and alice["calls"] == 3 and alice["traces"] == 3
    # trace durations 105, 305, 55 ms
    assert alice["p50_ms"] == pytest.approx(105) and alice["p95_ms"] == pytest.approx(285)
    assert set(by["user"]) == {"alice", "bob", "carol"}
    assert by["feature"]["chat"]["cost_usd"] == pytest.approx(0.70)
    assert by["feature"]["summarize"]["cost_usd"] == pytest.approx(0.30)
    assert by["feature"]["search"]["cost_usd"] is None

    table = render_cost(list(by["user"].values()), "user")
    lines = table.splitlines()
    assert lines[0].split() == [
        "USER",
        "COST",
        "INPUT",
        "TOK",
        "OUTPUT",
        "TOK",
        "CALLS",
        "UNPRICED",
        "TRACE",
        "P50",
        "TRACE",
        "P95",
    ]
    assert lines[1].split() == ["alice", "$0.40", "300", "30", "3", "1", "105ms", "285ms"]
    assert lines[-2].split()[:2] == ["TOTAL", "$1.00"]
    assert lines[-1].startswith("total $1.00")
    # unpriced calls are counted, for the total line that says they are left out
    embed = by["model"]["embed-v3"]
    assert embed["unpriced_calls"] == embed["calls"] > 0 and gpt["unpriced_calls"] == 0
    assert by["feature"]["search"]["unpriced_calls"] > 0 and by["feature"]["chat"]["unpriced_calls"] == 0
    models = render_cost(list(by["model"].values()), "model").splitlines()
    assert models[-1] == f"total $1.00 ({embed['calls']} unpriced call{'s' if embed['calls'] > 1 else ''} not included)"


async def test_trace_level_attribution_from_any_span_of_the_trace(clickhouse_dsn: str, chdb_database: str):
    # user set on a child span (not the root) still owns the whole trace's cost
    spans = llm_trace(NOW - HOUR, 1, service="svc", model="gpt-4o", duration_ms=10, cost=0.5)
    spans[1].attributes["user.id"] = "zoe"
    await _store(clickhouse_dsn, chdb_database, spans)
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        [row] = await q.cost_by("user", since="24h")
        listing = await q.list_traces(user="zoe")
    finally:
        await q.close()
    assert row["group"] == "zoe" and row["cost_usd"] == pytest.approx(0.5)
    assert [t["trace_id"] for t in listing["traces"]] == [tid(1)]
    text = render_trace_list(listing)
    assert tid(1) in text.splitlines()[1] and "$0.50" in text and "zoe" in text


async def test_queries_and_sink_share_one_engine_in_one_process(clickhouse_dsn: str, chdb_database: str):
    # the embedded runtime writes and reads the same directory from one process
    sink = await started_sink(clickhouse_dsn, chdb_database)
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        await sink.write(SpanBatch(rag_trace(NOW - HOUR, 3), "x"))
        trace = await q.get_trace(tid(3))
        assert trace is not None and trace["totals"]["spans"] == 5
        await sink.write(SpanBatch(rag_trace(NOW - HOUR, 4), "y"))
        assert [t["trace_id"] for t in (await q.list_traces())["traces"]] == [tid(4), tid(3)]
    finally:
        await q.close()
        await sink.close()
    client = open_client(clickhouse_dsn)
    try:
        assert client.query(f"SELECT count() FROM {chdb_database}.otel_traces").result_rows[0][0] == 10
    finally:
        client.close()
    assert sid(31)  # helper sanity: ids are hex strings


async def test_filters_judge_whole_traces_split_across_batches(clickhouse_dsn: str, chdb_database: str):
    # trace 1 started 30 h ago (root in one batch), its LLM span arrived in a later batch 1 h ago
    old = llm_trace(NOW - 30 * HOUR, 1, service="svc", model="gpt-4o", duration_ms=10, cost=0.5, user="ann")
    old[1].start_ns, old[1].end_ns = NOW - HOUR, NOW - HOUR + 10 * MS
    # trace 2: user on the root (first batch), cost on the child (second batch)
    new = llm_trace(NOW - 2 * HOUR, 2, service="svc", model="gpt-4o", duration_ms=10, cost=0.25, user="ben")
    await _store(clickhouse_dsn, chdb_database, old[:1], old[1:], new[:1], new[1:])
    q = _queries(clickhouse_dsn, chdb_database)
    try:
        recent = (await q.list_traces(since="24h"))["traces"]
        ben = (await q.list_traces(user="ben", model="gpt-4o"))["traces"]
        ann = (await q.list_traces(user="ann"))["traces"]
        users = {r["group"]: r for r in await q.cost_by("user", since="24h")}
    finally:
        await q.close()
    assert [t["trace_id"] for t in recent] == [tid(2)]  # trace 1 started before the window
    assert len(ben) == 1 and ben[0]["cost_usd"] == pytest.approx(0.25) and ben[0]["spans"] == 2
    assert len(ann) == 1 and ann[0]["start_ns"] == NOW - 30 * HOUR and ann[0]["cost_usd"] == pytest.approx(0.5)
    assert set(users) == {"ben"} and users["ben"]["cost_usd"] == pytest.approx(0.25)
