"""Poison isolation: sink error classes, bisection, the retry budget, dead letters and replay.

The ClickHouse cases run against real chDB (the session's directory, one database per
test); the bisection arithmetic is also checked with a small sink that refuses named spans.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.chain import Chain, PipelineRun
from pipeline.component import BaseProcessor, BaseSink, ComponentContext, SinkError
from pipeline.config import RetryConfig
from pipeline.dead_letter.service import DeadLetterService
from pipeline.dead_letter.store import LocalDeadLetterStore, store_path
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from sinks.clickhouse import classify_error
from tests.services import free_port
from tests.trace_samples import started_sink

FAST = RetryConfig(initial_backoff=0.001, max_backoff=0.002)
NOW = time.time_ns()
PAST_2262 = 2**63 + 10  # an end time DateTime64(9) cannot hold: the trace-summary view overflows (407)


def _ctx(cid: str, t: Telemetry) -> ComponentContext:
    return ComponentContext(cid, t, MemoryStateStore(), Path("."), logging.getLogger(cid))


def _spans(n: int, poison: set[int] = frozenset(), end: int | None = None) -> list[Span]:  # type: ignore[assignment]
    return [
        Span(f"{i + 1:032x}", f"{i + 1:016x}", "poison" if i in poison else f"s{i}", NOW + i,
             (end if (end is not None and i in poison) else NOW + i + 1000))
        for i in range(n)
    ]


class Picky(BaseSink):
    """Refuses (not retryably, reason overflow) every batch holding a span named 'poison'."""

    def __init__(self, cid: str, ctx: ComponentContext) -> None:
        super().__init__(cid, ctx)
        self.writes: list[SpanBatch] = []
        self.stored: dict[str, int] = {}  # span id -> times stored

    async def write(self, batch: SpanBatch) -> None:
        self.writes.append(batch)
        if any(s.name == "poison" for s in batch.spans):
            raise SinkError("value out of range", retryable=False, reason="overflow")
        for s in batch.spans:
            self.stored[s.span_id] = self.stored.get(s.span_id, 0) + 1


class Down(BaseSink):
    """Fails retryably `fail_times` times (every write, if None), then stores."""

    def __init__(self, cid: str, ctx: ComponentContext, fail_times: int | None = None) -> None:
        super().__init__(cid, ctx)
        self.fail_times = fail_times
        self.attempts = 0
        self.stored: list[Span] = []

    async def write(self, batch: SpanBatch) -> None:
        self.attempts += 1
        if self.fail_times is None or self.attempts <= self.fail_times:
            raise SinkError("connection refused", retryable=True)
        self.stored.extend(batch.spans)


@pytest.fixture
async def store(tmp_path: Path):
    s = LocalDeadLetterStore.under(tmp_path)
    yield s
    await s.close()


def _chain(sinks: dict, t: Telemetry, store: LocalDeadLetterStore | None, retry: RetryConfig = FAST,
           processors: list | None = None) -> Chain:
    chain = Chain([PipelineRun("traces", processors or [], list(sinks))], sinks, t, retry)
    chain.dead_letter = store
    return chain


# --- classification with real chDB errors -----------------------------------------------


def _raised(client, sql: str) -> BaseException:
    with pytest.raises(Exception) as err:
        client.command(sql)
    return err.value


async def test_clickhouse_errors_are_classified_by_class_from_real_chdb_errors(clickhouse_dsn: str,
                                                                               chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None)
    c = sink._client
    try:
        c.command(f"CREATE TABLE {chdb_database}.checked (x UInt8, CONSTRAINT small CHECK x < 10) "
                  "ENGINE = MergeTree ORDER BY x")
        cases = {
            "SELECT 1 + 'a'": (False, "type_mismatch"),  # 43 ILLEGAL_TYPE_OF_ARGUMENT
            "SELECT toDecimal32(1e10, 2)": (False, "overflow"),  # 407 DECIMAL_OVERFLOW
            "SELECT toDateTime64(now(), 20)": (False, "overflow"),  # 69 ARGUMENT_OUT_OF_BOUND
            "SELECT toUInt8('abc')": (False, "parse_error"),  # 6 CANNOT_PARSE_TEXT
            "SELECT CAST('x' AS Date)": (False, "parse_error"),  # 38 CANNOT_PARSE_DATE
            f"INSERT INTO {chdb_database}.checked VALUES (11)": (False, "constraint_violation"),  # 469
            "SELECT toDateTime('2020-01-01', 'Nowhere/Zone')": (False, "bad_argument"),  # 36 BAD_ARGUMENTS
            "SELECT arrayResize([1], 10000000000)": (False, "too_large"),  # 128 TOO_LARGE_ARRAY_SIZE
            "SELECT count() FROM numbers(10000000000) SETTINGS max_execution_time=0.1": (True, None),  # 159
            "SELECT groupArray(number) FROM numbers(10000000) SETTINGS max_memory_usage=1000000": (True, None),
            f"SELECT * FROM {chdb_database}.no_such_table": (True, None),  # 60: an operator problem, kept
        }
        got = {sql: classify_error(_raised(c, sql)) for sql in cases}
    finally:
        await sink.close()
    assert got == cases


def test_network_errors_from_the_http_client_are_retryable():
    with pytest.raises(OperationalError) as err:
        clickhouse_connect.get_client(host="127.0.0.1", port=free_port(), connect_timeout=2)
    assert classify_error(err.value) == (True, None)
    assert classify_error(DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)")) == (True, None)


async def test_a_span_ending_after_2262_is_refused_for_good_with_reason_overflow(clickhouse_dsn: str,
                                                                                chdb_database: str):
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    try:
        with pytest.raises(SinkError) as err:
            await sink.write(SpanBatch(_spans(1, {0}, end=PAST_2262), "b"))
    finally:
        await sink.close()
    assert (err.value.retryable, err.value.reason) == (False, "overflow")
    assert "2262" in str(err.value)


async def test_an_insert_failing_in_the_summary_view_leaves_rows_behind_so_the_sink_checks_first(
        clickhouse_dsn: str, chdb_database: str):
    """Why the sink refuses far-future times itself: ClickHouse is not atomic across views."""
    from sinks.clickhouse import spans_to_arrow

    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    try:
        with pytest.raises(DatabaseError) as err:
            sink._insert(spans_to_arrow(_spans(3, {1}, end=PAST_2262)), "raw")
        left = sink._client.query(f"SELECT count() FROM {chdb_database}.otel_traces").result_rows[0][0]
    finally:
        await sink.close()
    assert classify_error(err.value) == (False, "overflow")  # the real 407
    assert left == 3


# --- bisection --------------------------------------------------------------------------


async def test_one_bad_span_among_1000_stores_999_and_dead_letters_1_in_about_log2_writes(store):
    t = Telemetry()
    sink = Picky("picky", _ctx("picky", t))
    chain = _chain({"picky": sink}, t, store)
    await chain.run(SpanBatch(_spans(1000, {637}), "b1"))
    assert len(sink.stored) == 999 and set(sink.stored.values()) == {1}
    assert f"{638:016x}" not in sink.stored
    assert len(sink.writes) <= 2 * math.ceil(math.log2(1000)) + 1  # 1 + 2 per level
    entries = store.list()
    assert [(e.spans, e.reason, e.component, e.kind, e.pipeline) for e in entries] == [
        (1, "overflow", "picky", "sink", "traces")]
    assert entries[0].batch_id.startswith("b1/traces~")
    assert t.registry.get_sample_value("tracepipe_dead_letter_spans_total",
                                       {"sink": "picky", "reason": "overflow"}) == 1
    # the halves' ids derive from the parent and their position, the same on every delivery
    ids = [b.batch_id for b in sink.writes]
    assert ids[0] == "b1/traces" and ids[1:3] == ["b1/traces~0", "b1/traces~1"]


async def test_redelivered_poison_batch_halves_get_the_same_ids_so_storage_dedups(store):
    t = Telemetry()
    first, second = Picky("picky", _ctx("picky", t)), Picky("picky", _ctx("picky", t))
    for sink in (first, second):
        await _chain({"picky": sink}, t, store).run(SpanBatch(_spans(100, {3, 71}), "b7"))
    assert [b.batch_id for b in first.writes] == [b.batch_id for b in second.writes]
    assert len(first.stored) == 98 and len(store.list()) == 4  # two spans, two deliveries


async def test_sinks_that_acked_are_not_written_again_while_another_is_isolated(store):
    t = Telemetry()
    picky, steady = Picky("picky", _ctx("picky", t)), Picky("steady", _ctx("steady", t))
    chain = _chain({"picky": picky, "steady": steady}, t, store)
    chain.sinks["steady"].write = _count_and_store(steady)  # type: ignore[method-assign]
    await chain.run(SpanBatch(_spans(64, {5}), "b1"))
    assert len(steady.writes) == 1 and len(steady.stored) == 64
    assert len(picky.stored) == 63


def _count_and_store(sink: Picky):
    async def write(batch: SpanBatch) -> None:
        sink.writes.append(batch)
        for s in batch.spans:
            sink.stored[s.span_id] = sink.stored.get(s.span_id, 0) + 1
    return write


# --- the retry budget ------------------------------------------------------------------


async def test_a_sink_failing_past_max_attempts_is_isolated_and_dead_lettered_not_retried_forever(store):
    t = Telemetry()
    down = Down("down", _ctx("down", t))
    retry = RetryConfig(initial_backoff=0.001, max_backoff=0.002, max_attempts=3, max_elapsed=5)
    await _chain({"down": down}, t, store, retry).run(SpanBatch(_spans(1000), "b1"))
    assert sum(e.spans for e in store.list()) == 1000
    assert {e.reason for e in store.list()} == {"retries_exhausted"}
    assert down.stored == []
    # both halves failed retryably: the sink is down, not a span bad; no split down to single spans
    assert [e.spans for e in store.list()] == [500, 500]
    assert down.attempts == 3 + 2 * 2


async def test_the_isolation_is_bounded_by_max_elapsed_too(store):
    t = Telemetry()
    down = Down("down", _ctx("down", t))
    retry = RetryConfig(initial_backoff=0.05, max_backoff=0.05, max_attempts=1, max_elapsed=0.2)
    await _chain({"down": down}, t, store, retry).run(SpanBatch(_spans(10_000), "b1"))
    assert sum(e.spans for e in store.list()) == 10_000
    assert down.attempts < 100  # not 2 x 10,000: what is left at the deadline goes whole


async def test_a_sink_that_recovers_within_the_budget_loses_nothing_and_dead_letters_nothing(store):
    t = Telemetry()
    flaky = Down("flaky", _ctx("flaky", t), fail_times=5)
    retry = RetryConfig(initial_backoff=0.001, max_backoff=0.002, max_attempts=10)
    await _chain({"flaky": flaky}, t, store, retry).run(SpanBatch(_spans(50), "b1"))
    assert len(flaky.stored) == 50 and store.list() == []


async def test_retry_budget_config_defaults_and_validation():
    from pydantic import ValidationError

    r = RetryConfig()
    assert (r.max_attempts, r.max_elapsed) == (None, 300.0)
    with pytest.raises(ValidationError):
        RetryConfig(max_attempts=0)


# --- chDB end to end in process ---------------------------------------------------------


async def _rows(sink, db: str) -> list[tuple]:
    return sink._client.query(f"SELECT SpanId, count() FROM {db}.otel_traces GROUP BY SpanId").result_rows


async def test_chdb_poison_in_1000_spans_isolated_and_redelivery_stores_each_span_once(
        clickhouse_dsn: str, chdb_database: str, store):
    t = Telemetry()
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    try:
        chain = _chain({"clickhouse": sink}, t, store)
        batch_spans = _spans(1000, {400}, end=PAST_2262)
        await chain.run(SpanBatch(batch_spans, "b1"))
        await chain.run(SpanBatch(_spans(1000, {400}, end=PAST_2262), "b1"))  # redelivered
        rows = await _rows(sink, chdb_database)
        summary = sink._client.query(
            f"SELECT sum(SpanCount) FROM {chdb_database}.otel_traces_trace_summary").result_rows[0][0]
    finally:
        await sink.close()
    assert len(rows) == 999 and {n for _, n in rows} == {1}
    assert summary == 999
    assert [(e.spans, e.reason) for e in store.list()] == [(1, "overflow"), (1, "overflow")]


async def test_chdb_chunks_stored_before_the_poison_chunk_are_not_stored_twice(
        clickhouse_dsn: str, chdb_database: str, store):
    t = Telemetry()
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0, max_insert_rows=10)
    try:
        await _chain({"clickhouse": sink}, t, store).run(SpanBatch(_spans(35, {17}, end=PAST_2262), "b1"))
        rows = await _rows(sink, chdb_database)
    finally:
        await sink.close()
    assert len(rows) == 34 and {n for _, n in rows} == {1}
    assert store.list()[0].batch_id.startswith("b1/traces@10~")


async def test_a_stalled_chdb_sink_that_recovers_loses_nothing_and_counts_nothing_twice(
        clickhouse_dsn: str, chdb_database: str, store):
    """A real stall: the table refuses inserts with TOO_MANY_PARTS (252, retryable) until the
    operator raises its parts limit again, during the fourth backoff."""
    t = Telemetry()
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    table = f"{chdb_database}.otel_traces"
    try:
        await sink.write(SpanBatch(_spans(1), "first"))  # one part exists
        sink._client.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 1")
        chain = _chain({"clickhouse": sink}, t, store, RetryConfig(initial_backoff=0.01, max_backoff=0.02))
        backoffs = 0

        async def backoff(seconds: float) -> None:
            nonlocal backoffs
            backoffs += 1
            if backoffs == 4:
                sink._client.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 3000")

        chain.writer._sleep = backoff
        spans = _spans(300)[1:]
        await chain.run(SpanBatch(spans, "b1"))
        await chain.run(SpanBatch(_spans(300)[1:], "b1"))  # and a redelivery on top
        rows = await _rows(sink, chdb_database)
        summary = sink._client.query(f"SELECT sum(SpanCount) FROM {table}_trace_summary").result_rows[0][0]
    finally:
        await sink.close()
    assert backoffs == 4
    assert len(rows) == 300 and {n for _, n in rows} == {1}
    assert summary == 300
    assert store.list() == []
    assert t.registry.get_sample_value("tracepipe_sink_retries_total", {"sink": "clickhouse"}) == 4


# --- processors, the store, replay ------------------------------------------------------


class Fragile(BaseProcessor):
    """Raises on spans named 'poison' unless fixed."""

    fixed = False

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not self.fixed and any(s.name == "poison" for s in batch.spans):
            raise ValueError("cannot handle this span")
        for s in batch.spans:
            s.attributes["fragile.seen"] = True
        return batch


async def test_spans_a_processor_raises_on_are_dead_lettered_and_replay_through_it_after_a_fix(store):
    t = Telemetry()
    sink = Picky("rec", _ctx("rec", t))
    sink.write = _count_and_store(sink)  # type: ignore[method-assign]
    proc = Fragile("fragile", _ctx("fragile", t))
    chain = _chain({"rec": sink}, t, store, processors=[proc])
    await chain.run(SpanBatch(_spans(10, {4}), "b1"))
    assert len(sink.stored) == 9
    (entry,) = store.list()
    assert (entry.kind, entry.component, entry.reason, entry.spans) == ("processor", "fragile", "processor_error", 1)
    assert t.registry.get_sample_value("tracepipe_dead_letter_spans_total",
                                       {"sink": "fragile", "reason": "processor_error"}) == 1
    service = DeadLetterService(store, chain)
    again = await service.replay(entry.id)
    assert again["status"] == "failed_again" and len(store.list(status="new")) == 1
    Fragile.fixed = True
    try:
        result = await service.replay_all()
    finally:
        Fragile.fixed = False
    assert result["stored"] == 1 and result["dead_lettered_again"] == 0
    assert len(sink.stored) == 10 and sink.writes[-1].batch_id.startswith("replay-")
    assert {e.status for e in store.list()} == {"failed_again", "replayed"}


async def test_replay_of_a_sink_refusal_writes_only_that_sink(store):
    t = Telemetry()
    picky, steady = Picky("picky", _ctx("picky", t)), Picky("steady", _ctx("steady", t))
    steady.write = _count_and_store(steady)  # type: ignore[method-assign]
    chain = _chain({"picky": picky, "steady": steady}, t, store)
    await chain.run(SpanBatch(_spans(8, {2}), "b1"))
    picky.write = _count_and_store(picky)  # type: ignore[method-assign]  # "fixed"
    (entry,) = store.list()
    result = await DeadLetterService(store, chain).replay(entry.id)
    assert result == {"id": entry.id, "spans": 1, "stored": 1, "dead_lettered_again": 0, "status": "replayed"}
    assert len(picky.stored) == 8 and len(steady.stored) == 8 and len(steady.writes) == 1


async def test_dead_letter_store_keeps_entries_across_reopen_and_holds_otlp_protobuf(tmp_path: Path):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    t = Telemetry()
    first = LocalDeadLetterStore.under(tmp_path)
    await _chain({"picky": Picky("picky", _ctx("picky", t))}, t, first).run(SpanBatch(_spans(5, {1}), "b1"))
    await first.close()
    assert store_path(tmp_path) == tmp_path / "dead-letter" / "dead-letter.sqlite"
    again = LocalDeadLetterStore.under(tmp_path)
    try:
        (summary,) = again.list()
        entry = again.get(summary.id)
        assert again.get("dl-nope") is None
        again.mark(summary.id, "replayed")
        assert again.list(status="replayed")[0].replayed_at is not None
        assert again.counts() == {"replayed": 1}
    finally:
        await again.close()
    req = ExportTraceServiceRequest.FromString(entry.request)
    assert [sp.name for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans] == ["poison"]
    assert entry.error == "value out of range" and entry.at <= time.time()


# --- validation at the door -------------------------------------------------------------


def _door(*spans):
    from pipeline.otlp.validate import sanitize
    from tests.otlp_support import pb_request

    req = pb_request(list(spans))
    return req, sanitize(req, 1000)


def test_door_rejects_times_storage_cannot_hold_and_clamps_what_it_can_fix():
    from pipeline.otlp.validate import CLAMPED_ATTRIBUTE, sanitize
    from tests.otlp_support import pb_request, pb_span

    good, late_end, late_start, backwards, event_far = (pb_span(i) for i in range(5))
    late_end.end_time_unix_nano = PAST_2262
    late_start.start_time_unix_nano = PAST_2262
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 5
    ev = event_far.events.add()
    ev.time_unix_nano, ev.name = 2**64 - 1, "far"
    req, res = _door(good, late_end, late_start, backwards, event_far)
    assert (res.accepted, res.rejected) == (3, 2)
    assert res.reasons == {"timestamp_out_of_range": 2}
    assert "2262" in res.message
    assert res.clamped == {"end_before_start": 1}
    kept = list(req.resource_spans[0].scope_spans[0].spans)
    assert [sp.name for sp in kept] == ["span-0", "span-3", "span-4"]
    assert kept[1].end_time_unix_nano == kept[1].start_time_unix_nano
    assert kept[2].events[0].time_unix_nano == 2**64 - 1  # left to the sink, which clamps it
    flags = {sp.name: [a.value.string_value for a in sp.attributes if a.key == CLAMPED_ATTRIBUTE] for sp in kept}
    assert flags == {"span-0": [], "span-3": ["end_before_start"], "span-4": []}
    off = pb_request([pb_span(9)])
    off.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = PAST_2262
    assert sanitize(off, 1000, storage_checks=False).rejected == 0


async def test_spans_clamped_at_the_door_are_stored(clickhouse_dsn: str, chdb_database: str, store):
    from pipeline.otlp.decode import decode_request
    from tests.otlp_support import pb_span

    backwards, event_far = pb_span(1), pb_span(2)
    backwards.end_time_unix_nano = 5
    event_far.events.add().time_unix_nano = 2**64 - 1
    req, _ = _door(backwards, event_far)
    t = Telemetry()
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    try:
        await _chain({"clickhouse": sink}, t, store).run(SpanBatch(decode_request(req), "door"))
        rows = sink._client.query(
            f"SELECT SpanAttributes['tracepipe.clamped'], Duration FROM {chdb_database}.otel_traces "
            "ORDER BY SpanId").result_rows
        (event_time,) = sink._client.query(
            f"SELECT toUnixTimestamp64Nano(`Events.Timestamp`[1]) FROM {chdb_database}.otel_traces "
            "WHERE notEmpty(`Events.Timestamp`)").result_rows[0]
    finally:
        await sink.close()
    assert rows == [("end_before_start", 0), ("", 1_000_000_000)]
    assert event_time == 2**63 - 1  # the last storable instant
    assert store.list() == []


async def test_the_sinks_time_check_predicts_exactly_which_spans_the_summary_view_overflows_on(
        clickhouse_dsn: str, chdb_database: str):
    from sinks.clickhouse import _summary_end_overflows, spans_to_arrow

    i64 = 2**63 - 1
    pairs = [(NOW, i64), (NOW, i64 + 1), (2**64 - 1, 2**64 - 1), (0, 2**64 - 1), (NOW, 2**64 - 1),
             (i64 + 5, i64 + 10), (NOW, NOW - 1), (i64, 2**64 - 2)]
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    refused = []
    try:
        for n, (start, end) in enumerate(pairs):
            try:
                sink._insert(spans_to_arrow([Span(f"{n + 1:032x}", f"{n + 1:016x}", "t", start, end)]), f"p{n}")
                refused.append(False)
            except DatabaseError as e:
                assert classify_error(e) == (False, "overflow")
                refused.append(True)
    finally:
        await sink.close()
    assert refused == [_summary_end_overflows(s, e) for s, e in pairs]
    assert True in refused and False in refused


async def test_the_grpc_receiver_answers_partial_success_for_unstorable_times_and_counts_clamps():
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
    from tests.otlp_support import pb_request, pb_span, running

    late, backwards, fine = pb_span(0), pb_span(1), pb_span(2)
    late.end_time_unix_nano = PAST_2262
    backwards.end_time_unix_nano = 0
    async with running(OtlpGrpcReceiver) as rig:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rig.port}") as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            resp = await stub.Export(pb_request([late, backwards, fine]), timeout=10)
        assert resp.partial_success.rejected_spans == 1
        assert "2262" in resp.partial_success.error_message
        assert [s.name for s in await rig.take_spans()] == ["span-1", "span-2"]
        assert rig.metric("dropped_spans", reason="timestamp_out_of_range") == 1
        assert rig.metric("receiver_clamped_spans", receiver="otlp", reason="end_before_start") == 1


async def test_values_found_storable_are_stored_as_they_are(clickhouse_dsn: str, chdb_database: str, store):
    """Why the door has no rule for them: each of these is stored by chDB unchanged."""
    from pipeline.spans import Event

    odd = Span(f"{1:032x}", f"{1:016x}", "", NOW, NOW + 1, events=[Event(0, "at zero")],
               attributes={"big": 2**63 - 1, "small": -(2**63), "nan": float("nan"), "inf": float("-inf"),
                           "nul\x00key": "nul\x00value", "gen_ai.usage.cost_usd": float("inf"),
                           "gen_ai.usage.input_tokens": 2**63 - 1})
    long_name = Span(f"{1:032x}", f"{2:016x}", "n" * 2_000_000, 0, NOW)
    t = Telemetry()
    sink = await started_sink(clickhouse_dsn, chdb_database, ttl_days=None, retries=0)
    try:
        await _chain({"clickhouse": sink}, t, store).run(SpanBatch([odd, long_name], "odd"))
        rows = sink._client.query(
            f"SELECT length(SpanName), SpanAttributes['big'], SpanAttributes['nan'], SpanAttributes['inf'], "
            f"SpanAttributes['nul\\0key'], CostUsd, InputTokens FROM {chdb_database}.otel_traces ORDER BY SpanId"
        ).result_rows
    finally:
        await sink.close()
    assert store.list() == []
    assert rows[0] == (0, str(2**63 - 1), "nan", "-inf", "nul\x00value", None, 2**63 - 1)
    assert rows[1][0] == 2_000_000


class _HangingServer:
    """A loopback socket that accepts connections and never answers (a hung ClickHouse)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:

        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("server", ["hangs", "refuses"])
async def test_a_hung_or_refusing_clickhouse_server_fails_retryably_and_never_holds_a_batch_forever(
        server: str, store):
    from sinks.clickhouse import factory
    from tests.trace_samples import context

    hang = _HangingServer() if server == "hangs" else None
    port = hang.port if hang else free_port()
    cfg = factory.config_model(dsn=f"http://127.0.0.1:{port}/default", retries=0, connect_timeout=1,
                               send_receive_timeout=1)
    t = Telemetry()
    sink = factory.create("clickhouse", cfg, context(telemetry=t))
    try:
        await sink.start()  # unreachable is not fatal: not ready, connects on the next write
        assert not sink.ready()
        with pytest.raises(SinkError) as err:
            await sink.write(SpanBatch(_spans(1), "direct"))
        assert err.value.retryable and err.value.reason is None
        retry = RetryConfig(initial_backoff=0.01, max_backoff=0.02, max_attempts=2, max_elapsed=2)
        chain = _chain({"clickhouse": sink}, t, store, retry)
        await chain.run(SpanBatch(_spans(2), "b1"))
    finally:
        await sink.close()
        if hang:
            hang.close()
    assert sum(e.spans for e in store.list()) == 2
    assert {e.reason for e in store.list()} == {"retries_exhausted"}
    if hang:
        assert hang.held  # it did hang the client, which gave up on its own


class _FailingStore:
    async def publish(self, entry) -> None:  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    async def close(self) -> None:
        return None


async def test_a_dead_letter_the_store_cannot_keep_is_counted_dropped_and_the_batch_completes():
    t = Telemetry()
    sink = Picky("picky", _ctx("picky", t))
    chain = Chain([PipelineRun("traces", [], ["picky"])], {"picky": sink}, t, FAST)
    chain.dead_letter = _FailingStore()
    await chain.run(SpanBatch(_spans(4, {1}), "b1"))
    assert len(sink.stored) == 3
    assert t.registry.get_sample_value("tracepipe_dropped_spans_total", {"reason": "dead_letter_failed"}) == 1


async def test_a_refused_span_otlp_cannot_carry_is_counted_dropped_not_a_crash(store):
    t = Telemetry()
    sink = Picky("picky", _ctx("picky", t))
    spans = _spans(4, {1})
    spans[1].attributes["bad"] = "\ud800"  # a lone surrogate: no protobuf string can hold it
    await _chain({"picky": sink}, t, store).run(SpanBatch(spans, "b1"))
    assert len(sink.stored) == 3 and store.list() == []
    assert t.registry.get_sample_value("tracepipe_dropped_spans_total", {"reason": "dead_letter_failed"}) == 1
