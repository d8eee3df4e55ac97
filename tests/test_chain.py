"""The chain runner: pipelines, fan-out, failure isolation and sink retries."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.chain import Chain, PipelineRun
from pipeline.component import BaseProcessor, BaseSink, ComponentContext, SinkError
from pipeline.config import RetryConfig
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry


def _ctx(cid: str, t: Telemetry) -> ComponentContext:
    return ComponentContext(cid, t, MemoryStateStore(), Path("."), logging.getLogger(cid))


def _spans(n: int, **attrs: object) -> list[Span]:
    return [Span(f"{i:032x}", f"{i + 1:016x}", f"s{i}", 1, 2, attributes=dict(attrs)) for i in range(n)]


class Tag(BaseProcessor):
    def process(self, batch: SpanBatch) -> SpanBatch:
        for s in batch.spans:
            s.attributes[self.component_id] = True
        return batch


class Poisoned(BaseProcessor):
    """Raises whenever a span named 's3' is in the batch."""

    def process(self, batch: SpanBatch) -> SpanBatch:
        if any(s.name == "s3" for s in batch.spans):
            raise ValueError("boom")
        return batch


class DropOdd(BaseProcessor):
    def process(self, batch: SpanBatch) -> SpanBatch:
        return batch.with_spans([s for s in batch.spans if int(s.name[1:]) % 2 == 0])


class Holder(BaseProcessor):
    """Holds every span until flush (like a tail sampler)."""

    def __init__(self, cid: str, ctx: ComponentContext) -> None:
        super().__init__(cid, ctx)
        self.held: list[Span] = []

    def process(self, batch: SpanBatch) -> SpanBatch:
        self.held.extend(batch.spans)
        return batch.with_spans([])

    def flush(self) -> list[Span]:
        out, self.held = self.held, []
        return out


class Recorder(BaseSink):
    def __init__(self, cid: str, ctx: ComponentContext, fail_times: int = 0, retryable: bool = True) -> None:
        super().__init__(cid, ctx)
        self.fail_times = fail_times
        self.retryable = retryable
        self.attempts = 0
        self.batches: list[SpanBatch] = []

    async def write(self, batch: SpanBatch) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise SinkError("not now", retryable=self.retryable)
        self.batches.append(batch)

    @property
    def spans(self) -> list[Span]:
        return [s for b in self.batches for s in b.spans]


FAST = RetryConfig(initial_backoff=0.001, max_backoff=0.002)


async def test_bad_span_is_dropped_and_counted_while_the_rest_of_its_batch_passes() -> None:
    t = Telemetry()
    sink = Recorder("rec", _ctx("rec", t))
    chain = Chain([PipelineRun("p", [Poisoned("poison", _ctx("poison", t))], ["rec"])], {"rec": sink}, t, FAST)
    await chain.run(SpanBatch(_spans(6), "b1"))
    assert sorted(s.name for s in sink.spans) == ["s0", "s1", "s2", "s4", "s5"]
    assert t.registry.get_sample_value(
        "tracepipe_processor_dropped_spans_total", {"processor": "poison", "reason": "processor_error"}) == 1


async def test_failing_sink_is_retried_alone_until_it_acks() -> None:
    t = Telemetry()
    flaky = Recorder("flaky", _ctx("flaky", t), fail_times=3)
    steady = Recorder("steady", _ctx("steady", t))
    chain = Chain([PipelineRun("p", [], ["flaky", "steady"])], {"flaky": flaky, "steady": steady}, t, FAST)
    await chain.run(SpanBatch(_spans(4), "b1"))
    assert flaky.attempts == 4 and len(flaky.spans) == 4
    assert steady.attempts == 1 and len(steady.spans) == 4
    assert flaky.batches[0].batch_id == "b1/p"
    assert t.registry.get_sample_value("tracepipe_sink_retries_total", {"sink": "flaky"}) == 3
    assert t.registry.get_sample_value("tracepipe_sink_sent_spans_total", {"sink": "flaky"}) == 4


async def test_non_retryable_sink_error_without_a_dead_letter_store_drops_only_the_refused_spans() -> None:
    t = Telemetry()
    bad = Recorder("bad", _ctx("bad", t), fail_times=10, retryable=False)  # refuses everything
    chain = Chain([PipelineRun("p", [], ["bad"])], {"bad": bad}, t, FAST)
    await chain.run(SpanBatch(_spans(3), "b1"))
    assert bad.spans == []
    assert t.registry.get_sample_value("tracepipe_dropped_spans_total", {"reason": "sink_rejected"}) == 3


async def test_pipeline_from_another_sees_its_output_and_its_drops_do_not_reach_the_parent() -> None:
    t = Telemetry()
    acct = Recorder("acct", _ctx("acct", t))
    store = Recorder("store", _ctx("store", t))
    pipes = [
        PipelineRun("accounting", [Tag("cost", _ctx("cost", t))], ["acct"]),
        PipelineRun("traces", [DropOdd("sample", _ctx("sample", t)), Tag("redact", _ctx("redact", t))],
                    ["store"], source="accounting"),
    ]
    chain = Chain(pipes, {"acct": acct, "store": store}, t, FAST)
    await chain.run(SpanBatch(_spans(6), "b1"))
    assert len(acct.spans) == 6 and all(s.attributes.get("cost") for s in acct.spans)
    assert not any("redact" in s.attributes for s in acct.spans)  # child worked on a copy
    assert [s.name for s in store.spans] == ["s0", "s2", "s4"]
    assert all(s.attributes.get("cost") and s.attributes.get("redact") for s in store.spans)
    assert {b.batch_id for b in acct.batches} == {"b1/accounting"}
    assert {b.batch_id for b in store.batches} == {"b1/traces"}


async def test_two_root_pipelines_each_get_their_own_copy() -> None:
    t = Telemetry()
    a, b = Recorder("a", _ctx("a", t)), Recorder("b", _ctx("b", t))
    pipes = [PipelineRun("one", [Tag("x", _ctx("x", t))], ["a"]), PipelineRun("two", [], ["b"])]
    chain = Chain(pipes, {"a": a, "b": b}, t, FAST)
    await chain.run(SpanBatch(_spans(2), "b1"))
    assert all(s.attributes.get("x") for s in a.spans)
    assert not any("x" in s.attributes for s in b.spans)


async def test_flush_releases_held_spans_through_the_rest_of_the_chain() -> None:
    t = Telemetry()
    sink = Recorder("rec", _ctx("rec", t))
    holder = Holder("hold", _ctx("hold", t))
    chain = Chain([PipelineRun("p", [holder, Tag("after", _ctx("after", t))], ["rec"])], {"rec": sink}, t, FAST)
    await chain.run(SpanBatch(_spans(3), "b1"))
    assert sink.spans == []
    await chain.flush()
    assert len(sink.spans) == 3 and all(s.attributes.get("after") for s in sink.spans)
