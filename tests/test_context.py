"""The context processor: accounting attributes inherited from ancestors (nearest wins, own
value wins), holding until the root arrives or the wait passes, memory bounds, late spans,
deterministic batch ids, held_batches and flush."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.batch_ids import SOURCES, derived_batch_id
from pipeline.component import ComponentContext
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.context import ContextConfig, ContextProcessor

T1 = "a" * 32
T2 = "b" * 32


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(config: dict | None = None, clock: FakeClock | None = None, telemetry: Telemetry | None = None):
    t = telemetry or Telemetry()
    ctx = ComponentContext("context", t, MemoryStateStore(), Path("."), logging.getLogger("t"))
    return ContextProcessor("context", ContextConfig.model_validate(config or {}), ctx, clock=clock or FakeClock()), t


def sp(trace: str, span: str, parent: str = "", attrs: dict | None = None, resource: Resource | None = None) -> Span:
    return Span(trace, span.rjust(16, "0"), "op", 0, 1, parent_span_id=parent.rjust(16, "0") if parent else "",
                attributes=dict(attrs or {}), resource=resource or Resource({"service.name": "app"}))


def metric(t: Telemetry, name: str) -> float:
    return t.registry.get_sample_value(name, {"processor": "context"}) or 0.0


def three_levels(trace: str = T1) -> tuple[Span, Span, Span]:
    root = sp(trace, "1", attrs={"user.id": "u-42", "customer.id": "acme", "app.feature": "ask"})
    mid = sp(trace, "2", "1", attrs={"app.feature": "retrieve"})
    llm = sp(trace, "3", "2", attrs={"gen_ai.request.model": "gpt-4o"})
    return root, mid, llm


def test_children_arriving_before_the_root_are_held_then_inherit_nearest_ancestor_values() -> None:
    proc, t = make()
    root, mid, llm = three_levels()
    out = proc.process(SpanBatch([llm, mid], "b1"))
    assert out.spans == [] and proc.held_spans == 2 and proc.held_batches() == {"b1"}
    out = proc.process(SpanBatch([root], "b2"))
    assert {s.span_id for s in out.spans} == {root.span_id, mid.span_id, llm.span_id}
    assert llm.attributes["user.id"] == "u-42" and llm.attributes["customer.id"] == "acme"
    assert llm.attributes["app.feature"] == "retrieve"  # the nearest ancestor wins
    assert mid.attributes["app.feature"] == "retrieve"  # a span's own value wins
    assert proc.held_spans == 0 and proc.held_batches() == set()
    assert metric(t, "tracepipe_context_spans_without_root_total") == 0


def test_released_spans_carry_a_batch_id_derived_from_their_source_batches() -> None:
    proc, _ = make()
    root, mid, llm = three_levels()
    proc.process(SpanBatch([llm, mid], "b1"))
    out = proc.process(SpanBatch([root], "b2"))
    assert out.batch_id == derived_batch_id("ctx", {"b1", "b2"}, out.spans)
    assert out.meta[SOURCES] == ["b1", "b2"]
    again, _ = make()
    root, mid, llm = three_levels()
    again.process(SpanBatch([llm, mid], "b1"))
    assert again.process(SpanBatch([root], "b2")).batch_id == out.batch_id  # redelivery: same id
    whole, _ = make()
    assert whole.process(SpanBatch(list(three_levels(T2)), "b3")).batch_id == "b3"  # nothing held: id kept


def test_a_trace_whose_root_never_comes_is_released_after_the_wait_and_counted() -> None:
    clock = FakeClock()
    proc, t = make({"decision_wait": 5}, clock)
    _root, mid, llm = three_levels()
    assert proc.process(SpanBatch([llm, mid], "b1")).spans == []
    clock.t += 4.9
    assert proc.process(SpanBatch([], "tick-1")).spans == []
    clock.t += 0.2
    out = proc.process(SpanBatch([], "tick-2"))
    assert len(out.spans) == 2 and out.batch_id == derived_batch_id("ctx", {"b1"}, out.spans)
    assert llm.attributes["app.feature"] == "retrieve" and "user.id" not in llm.attributes
    assert metric(t, "tracepipe_context_spans_without_root_total") == 2


def test_spans_after_their_root_resolve_at_once_from_the_remembered_context() -> None:
    proc, _ = make()
    root, mid, llm = three_levels()
    proc.process(SpanBatch([root, mid], "b1"))
    late_child = sp(T1, "4", "3", attrs={"gen_ai.request.model": "gpt-4o"})
    out = proc.process(SpanBatch([llm, late_child], "b2"))
    assert len(out.spans) == 2 and proc.held_spans == 0
    assert late_child.attributes["app.feature"] == "retrieve" and late_child.attributes["user.id"] == "u-42"
    orphan = sp(T1, "9", "77")  # parent never seen: the root's context applies
    proc.process(SpanBatch([orphan], "b3"))
    assert orphan.attributes["app.feature"] == "ask"


def test_resource_values_count_as_the_spans_own_and_are_inherited_by_other_services() -> None:
    proc, _ = make()
    root = sp(T1, "1", attrs={"tenant.id": "claimed"}, resource=Resource({"service.name": "a", "tenant.id": "t1"}))
    child = sp(T1, "2", "1", resource=Resource({"service.name": "b"}))
    mine = sp(T1, "3", "1", resource=Resource({"service.name": "c", "tenant.id": "t2"}))
    proc.process(SpanBatch([child, mine, root], "b1"))
    assert root.attributes["tenant.id"] == "claimed"  # untouched
    assert child.attributes["tenant.id"] == "claimed"  # the span attribute beats the ancestor's resource
    assert "tenant.id" not in mine.attributes  # own resource value wins: nothing copied


def test_memory_bounds_release_the_oldest_traces_first_and_count_them() -> None:
    proc, t = make({"max_traces": 2})
    for i in range(3):
        proc.process(SpanBatch([sp(f"{i:032x}", "2", "1")], f"b{i}"))
    assert proc.held_traces == 2 and proc.held_batches() == {"b1", "b2"}
    assert metric(t, "tracepipe_context_early_releases_total") == 1
    assert metric(t, "tracepipe_context_spans_without_root_total") == 1


def test_extra_keys_from_yaml_are_inherited_and_empty_keys_are_refused() -> None:
    proc, _ = make({"keys": ["app.team"]})
    root = sp(T1, "1", attrs={"app.team": "search"})
    child = sp(T1, "2", "1")
    proc.process(SpanBatch([child, root], "b1"))
    assert child.attributes["app.team"] == "search"
    with pytest.raises(ValidationError):
        ContextConfig.model_validate({"keys": [""]})


def test_flush_releases_everything_held() -> None:
    proc, t = make()
    _root, mid, llm = three_levels()
    proc.process(SpanBatch([llm, mid], "b1"))
    assert {s.span_id for s in proc.flush()} == {mid.span_id, llm.span_id}
    assert proc.held_spans == 0 and metric(t, "tracepipe_context_buffered_spans") == 0


def test_a_parent_cycle_does_not_hang() -> None:
    proc, _ = make()
    a = sp(T1, "1", "2", attrs={"user.id": "u"})
    b = sp(T1, "2", "1")
    root = sp(T1, "3")
    out = proc.process(SpanBatch([a, b, root], "b1"))
    assert len(out.spans) == 3
