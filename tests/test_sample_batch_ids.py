"""Tail sampling names what it releases by its sources and content (pipeline/batch_ids.py):
a redelivery that releases the same spans gets the same batch id, so ClickHouse stores them
once; other content never reuses an id, so nothing is dropped as a false duplicate."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.batch_ids import SOURCES
from pipeline.chain import Chain, PipelineRun
from pipeline.component import ComponentContext
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.context import ContextConfig, ContextProcessor
from processors.sample import SampleConfig, SampleProcessor
from tests.test_sample import FakeClock, sp, tid
from tests.trace_samples import HOUR, MS, rag_trace, started_sink


def rag(t0_ns: int, n: int, kept: bool) -> list[Span]:
    """A 5-span RAG trace whose trace id the 0.5 probabilistic policy keeps or drops."""
    spans = rag_trace(t0_ns, n)
    for s in spans:
        s.trace_id = tid((1 << 55) + n if kept else n)
    return spans


TAIL_KEEP_ALL = {"mode": "tail", "decision_wait": 5, "probability": 1.0}


def make(config: dict, clock: FakeClock, state: MemoryStateStore | None = None) -> SampleProcessor:
    ctx = ComponentContext("sample", Telemetry(), state or MemoryStateStore(), Path("."), logging.getLogger("t"))
    return SampleProcessor("sample", SampleConfig.model_validate(config), ctx, clock=clock)


def trace(n: int, spans: int = 2) -> list[Span]:
    return [sp(tid(n), i, parent="" if i == 0 else "p") for i in range(spans)]


def run_with_ticks(proc: SampleProcessor, clock: FakeClock, tick_prefix: str) -> list[tuple[str, int]]:
    """b0 at t, b1 at t+3, ticks at t+6 and t+9 (the tick batches named like Chain.tick names them)."""
    out = []
    for i, (advance, batch) in enumerate([(0, SpanBatch(trace(1) + trace(2), "p/0/0-1")),
                                          (3, SpanBatch(trace(3), "p/0/2-2")),
                                          (3, SpanBatch([], f"tick-{tick_prefix}-1")),
                                          (3, SpanBatch([], f"tick-{tick_prefix}-2"))]):
        clock.t += advance
        res = proc.process(batch)
        if res.spans:
            out.append((res.batch_id, len(res.spans)))
        assert i < 2 or not res.batch_id.startswith("tick-"), "a release travels under a tick's id"
    return out


def test_two_runs_over_the_same_input_release_under_the_same_ids() -> None:
    first = run_with_ticks(make(TAIL_KEEP_ALL, c1 := FakeClock()), c1, "aaaa")
    again = run_with_ticks(make(TAIL_KEEP_ALL, c2 := FakeClock()), c2, "bbbb")  # another process: other tick ids
    assert first == again
    assert [n for _, n in first] == [4, 2]  # traces 1 and 2 on the first tick, trace 3 on the second
    assert len({bid for bid, _ in first}) == 2 and all(bid.startswith("smp-") for bid, _ in first)


def test_a_release_names_its_source_batches_in_meta() -> None:
    clock = FakeClock()
    proc = make(TAIL_KEEP_ALL, clock)
    proc.process(SpanBatch(trace(1), "p/0/0-1"))
    proc.process(SpanBatch(trace(1, 3)[2:], "p/0/2-2"))  # a later span of the same trace
    clock.t += 6
    out = proc.process(SpanBatch([], "tick-x-1"))
    assert len(out.spans) == 3 and out.meta[SOURCES] == ["p/0/0-1", "p/0/2-2"]


def test_a_redelivered_source_batch_with_other_decisions_gets_another_id() -> None:
    batch = trace(1) + trace(2)
    capped = {**TAIL_KEEP_ALL, "policies": [{"name": "all", "type": "probabilistic", "probability": 1.0},
                                             {"name": "cap", "type": "daily_cap", "max_traces": 3}]}
    state = MemoryStateStore()  # the daily cap's counter outlives the worker (a state table)
    ids = []
    for _ in range(2):
        clock = FakeClock()
        proc = make(capped, clock, state)
        proc.process(SpanBatch([s for s in batch], "p/0/0-1"))
        clock.t += 6
        out = proc.process(SpanBatch([], "tick-x-1"))
        ids.append((out.batch_id, len(out.spans)))
    (first, n_first), (second, n_second) = ids
    assert (n_first, n_second) == (4, 2)  # the redelivery hit the cap after one trace: other content
    assert first != second


def test_two_releases_from_the_same_source_batch_never_share_an_id() -> None:
    clock = FakeClock()
    proc = make({**TAIL_KEEP_ALL, "max_traces": 1}, clock)
    early = proc.process(SpanBatch(trace(1) + trace(2), "p/0/0-1"))  # trace 1 decided early: memory full
    clock.t += 6
    late = proc.process(SpanBatch([], "tick-x-1"))
    assert early.meta[SOURCES] == late.meta[SOURCES] == ["p/0/0-1"]
    assert len(early.spans) == len(late.spans) == 2 and early.batch_id != late.batch_id


def test_spans_held_from_a_context_derived_batch_are_held_under_their_transport_batches() -> None:
    clock = FakeClock()
    ctx = ComponentContext("context", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    context = ContextProcessor("context", ContextConfig(), ctx, clock=clock)
    sampler = make(TAIL_KEEP_ALL, clock)
    root, child = trace(1)
    assert context.process(SpanBatch([child], "p/0/0-0")).spans == []  # waits for its root
    derived = context.process(SpanBatch([root], "p/0/1-1"))
    assert derived.batch_id.startswith("ctx-")
    assert sampler.process(derived).spans == []
    assert sampler.held_batches() == {"p/0/0-0", "p/0/1-1"}  # what the worker can hold its commit on


async def test_a_redelivered_batch_with_tail_sampled_releases_is_stored_once(clickhouse_dsn: str,
                                                                            chdb_database: str) -> None:
    t0 = time.time_ns() - HOUR
    sink = await started_sink(clickhouse_dsn, chdb_database)
    config = {"mode": "tail", "decision_wait": 5, "always_keep": {"error": False},
              "policies": [{"name": "half", "type": "probabilistic", "probability": 0.5}]}
    try:
        runs = []
        for _ in range(2):  # the first worker stores, crashes before its commit; the next one reads it all again
            clock = FakeClock()
            chain = Chain([PipelineRun("traces", [make(config, clock)], ["clickhouse"])],
                          {"clickhouse": sink}, Telemetry())
            await chain.run(SpanBatch(rag(t0, 1, True) + rag(t0, 2, False), "otlp_spans/0/0-1"))
            clock.t += 3
            await chain.run(SpanBatch(rag(t0 + MS, 3, True) + rag(t0 + MS, 4, True), "otlp_spans/0/2-3"))
            for _ in range(2):
                clock.t += 3
                await chain.tick()
            runs.append(sink._client.query(
                f"SELECT TraceId, count() FROM {chdb_database}.otel_traces GROUP BY TraceId ORDER BY TraceId"
            ).result_rows)
        first, after_redelivery = runs
        assert first == sorted((tid((1 << 55) + n), 5) for n in (1, 3, 4))  # trace 2 sampled out
        assert after_redelivery == first  # every release of the redelivery was dropped as a duplicate
    finally:
        await sink.close()


async def test_a_shutdown_flush_is_named_by_its_content_so_a_repeat_stores_once(clickhouse_dsn: str,
                                                                               chdb_database: str) -> None:
    """Chain.flush names what a processor releases at shutdown by its content: the same held spans
    flushed again (another process, after a crash before the flush was acknowledged) are stored once."""
    t0 = time.time_ns() - HOUR
    sink = await started_sink(clickhouse_dsn, chdb_database)
    config = {"mode": "tail", "decision_wait": 60, "probability": 1.0}
    try:
        for _ in range(2):
            chain = Chain([PipelineRun("traces", [make(config, FakeClock())], ["clickhouse"])],
                          {"clickhouse": sink}, Telemetry())
            await chain.run(SpanBatch(rag(t0, 7, True), "otlp_spans/0/0-0"))  # held: decision_wait not over
            await chain.flush()
        rows = sink._client.query(f"SELECT count(), uniqExact(TraceId, SpanId) FROM {chdb_database}.otel_traces")
        assert rows.result_rows == [(5, 5)]
    finally:
        await sink.close()
