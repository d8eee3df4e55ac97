"""The sample processor: OTel consistent probability sampling (known vectors, consistency,
observed rate), always-keep rules, tail policies, bounded memory, decision wait by an
injected clock, flush."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.component import ComponentContext
from pipeline.spans import STATUS_ERROR, Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.sample import ATTR_POLICY, ATTR_PROBABILITY, SampleConfig, SampleProcessor
from processors.sampling_math import (
    incoming_threshold,
    probability_to_threshold,
    randomness,
    threshold_to_tvalue,
    with_threshold,
)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(
    config: dict, clock: FakeClock | None = None, wall: FakeClock | None = None, telemetry: Telemetry | None = None
):
    ctx = ComponentContext("sample", telemetry or Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    return SampleProcessor("sample", SampleConfig.model_validate(config), ctx, clock=clock, wall_clock=wall)


def sp(trace_id: str, i: int = 0, *, parent: str = "p", service: str = "api", attrs: dict | None = None, **kw) -> Span:
    return Span(
        trace_id,
        f"{i + 1:016x}",
        "op",
        kw.pop("start_ns", 0),
        kw.pop("end_ns", 1_000_000),
        parent_span_id=parent,
        attributes=attrs or {},
        resource=kw.pop("resource", Resource({"service.name": service})),
        **kw,
    )


def tid(lower56: int, upper: int = 0xABCDEF12) -> str:
    """A trace id whose lower 56 bits (the OTel randomness) are `lower56`."""
    return f"{upper:018x}{lower56:014x}"


def ids(spans: list[Span]) -> set[str]:
    return {s.trace_id for s in spans}


def drops(telemetry: Telemetry) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in telemetry.processor_dropped_spans.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                out[s.labels["reason"]] = s.value
    return out


# --- the algorithm ------------------------------------------------------------------------


def test_thresholds_match_the_collector_pkg_sampling_vectors() -> None:
    # Vectors of opentelemetry-collector-contrib pkg/sampling probability_test.go.
    assert threshold_to_tvalue(probability_to_threshold(1.0)) == "0"
    assert threshold_to_tvalue(probability_to_threshold(0.5)) == "8"
    assert threshold_to_tvalue(probability_to_threshold(0.25)) == "c"
    assert threshold_to_tvalue(probability_to_threshold(1 / 3)) == "aaaaaaaaaaaaac"
    assert [threshold_to_tvalue(probability_to_threshold(d / 3, 3)) for d in (1, 2, 3)] == ["aab", "555", "0"]
    prob = 1 - 0x456789A * 2**-28
    assert threshold_to_tvalue(probability_to_threshold(prob)) == "456789a"
    assert [threshold_to_tvalue(probability_to_threshold(prob, p)) for p in (6, 5, 4, 3, 2, 1)] == [
        "45678a", "45679", "4568", "456", "45", "4",
    ]  # fmt: skip
    prob = 1 - 0x789ABCDEF * 2**-40
    assert [threshold_to_tvalue(probability_to_threshold(prob, p)) for p in (4, 2, 1)] == ["0789b", "079", "08"]
    tiny = [threshold_to_tvalue(probability_to_threshold(k * 2**-56, 3)) for k in (1, 2, 3, 4, 8, 16)]
    assert tiny == ["ffffffffffffff", "fffffffffffffe", "fffffffffffffd", "fffffffffffffc", "fffffffffffff8",
                    "fffffffffffff"]  # fmt: skip


def test_randomness_is_the_lower_56_bits_unless_tracestate_has_rv() -> None:
    assert randomness("0123456789abcdef" + "0123456789abcdef") == 0x23456789ABCDEF
    assert randomness("f" * 32, "vendor=1,ot=th:8;rv:00000000000001") == 1
    assert randomness("f" * 32, "ot=rv:zz") == 0xFFFFFFFFFFFFFF  # invalid rv is ignored
    assert incoming_threshold("a=b,ot=th:c") == 0xC0000000000000
    assert with_threshold("congo=t61rcWkgMzE,ot=rv:abcdefabcdefab;th:c", 0x80000000000000) == (
        "ot=th:8;rv:abcdefabcdefab,congo=t61rcWkgMzE"
    )


def test_head_decision_is_the_spec_rule_at_the_threshold_boundary() -> None:
    proc = make({"probability": 0.5, "always_keep": {"error": False}})
    keep, drop = tid(0x80000000000000), tid(0x7FFFFFFFFFFFFF)
    out = proc.process(SpanBatch([sp(keep), sp(drop, 1)], "b"))
    assert ids(out.spans) == {keep}
    kept = out.spans[0]
    assert kept.attributes[ATTR_PROBABILITY] == 0.5 and kept.attributes[ATTR_POLICY] == "probabilistic"
    assert kept.trace_state == "ot=th:8"


def test_head_decisions_are_consistent_across_instances_runs_and_rates() -> None:
    rng = random.Random(42)
    trace_ids = [f"{rng.getrandbits(128):032x}" for _ in range(5000)]

    def kept(p: float) -> set[str]:
        proc = make({"probability": p})
        return ids(proc.process(SpanBatch([sp(t, i) for i, t in enumerate(trace_ids)], "b")).spans)

    first, second = kept(0.2), kept(0.2)
    assert first == second  # same ids, same rate -> same decisions (another process, another run)
    assert kept(0.05) <= first <= kept(0.6)  # lower rates keep subsets: consistent across services
    expected = {t for t in trace_ids if int(t[-14:], 16) >= probability_to_threshold(0.2, 4)}
    assert first == expected


def test_observed_rate_is_within_statistical_bounds_over_100k_trace_ids() -> None:
    rng = random.Random(7)
    proc = make({"probability": 0.1})
    n, kept = 100_000, 0
    for b in range(20):
        spans = [sp(f"{rng.getrandbits(128):032x}", i) for i in range(n // 20)]
        kept += len(proc.process(SpanBatch(spans, f"b{b}")).spans)
    p = 0.1
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * p) < 5 * sigma, (kept, n * p, sigma)


def test_upstream_threshold_is_honoured_and_never_raised() -> None:
    proc = make({"probability": 0.5, "always_keep": {"error": False}})
    t = tid(0xD0000000000000)
    span = sp(t, trace_state="ot=th:c")  # an SDK sampled at 25%; we sample at 50%
    out = proc.process(SpanBatch([span], "b"))
    assert out.spans[0].trace_state == "ot=th:c" and out.spans[0].attributes[ATTR_PROBABILITY] == 0.25


def test_head_mode_returns_a_new_batch_without_touching_the_input_list() -> None:
    proc = make({"probability": 0.5, "always_keep": {"error": False}})
    spans = [sp(tid(0x10)), sp(tid(0xF0000000000000), 1)]
    batch = SpanBatch(spans, "b")
    out = proc.process(batch)
    assert len(batch.spans) == 2 and len(out.spans) == 1 and out.batch_id == "b"


# --- always keep ---------------------------------------------------------------------------


def test_always_keep_rules_keep_whole_trace_in_batch_and_later_spans() -> None:
    telemetry = Telemetry()
    proc = make(
        {
            "probability": 0.0001,
            "always_keep": {
                "error": True,
                "cost_usd_above": 0.5,
                "duration_ms_above": 30_000,
                "attributes": {"user.id": ["vip1", "vip2"]},
            },
        },
        telemetry=telemetry,
    )
    low = 0x01  # randomness far below the threshold: would be dropped
    err, cost, slow, vip, res_vip, plain = (tid(low, u) for u in (1, 2, 3, 4, 5, 6))
    batch = [
        sp(err, 0, status_code=STATUS_ERROR),
        sp(err, 1),
        sp(cost, 2, attrs={"gen_ai.usage.cost_usd": 0.75}),
        sp(cost, 3, attrs={"gen_ai.usage.cost_usd": 0.10}),
        sp(slow, 4, end_ns=31_000 * 10**6),
        sp(vip, 5, attrs={"user.id": "vip2"}),
        sp(res_vip, 6, resource=Resource({"service.name": "api", "user.id": "vip1"})),
        sp(plain, 7, attrs={"user.id": "someone", "gen_ai.usage.cost_usd": 0.2}),
    ]
    out = proc.process(SpanBatch(batch, "b1"))
    assert ids(out.spans) == {err, cost, slow, vip, res_vip}
    assert len(out.spans) == 7
    policies = {s.trace_id: s.attributes[ATTR_POLICY] for s in out.spans}
    assert policies[err] == "always_keep.error" and policies[cost] == "always_keep.cost"
    assert policies[slow] == "always_keep.latency" and policies[vip] == "always_keep.attribute"
    assert all(s.attributes[ATTR_PROBABILITY] == 1.0 and s.trace_state == "" for s in out.spans)
    later = proc.process(SpanBatch([sp(err, 9), sp(plain, 10)], "b2"))
    assert [s.trace_id for s in later.spans] == [err]  # the error trace's later span follows
    assert drops(telemetry)["sampled_out:probabilistic"] == 2


# --- tail ----------------------------------------------------------------------------------


def tail(policies: list[dict] | None = None, clock: FakeClock | None = None, wall: FakeClock | None = None, **extra):
    cfg = {"mode": "tail", "decision_wait": 5.0, "always_keep": {"error": False}, **extra}
    if policies is not None:
        cfg["policies"] = policies
    clock = clock or FakeClock()
    telemetry = Telemetry()
    return make(cfg, clock, telemetry=telemetry, wall=wall), clock, telemetry


def test_tail_holds_spans_until_the_decision_wait_elapses_on_the_injected_clock() -> None:
    proc, clock, _ = tail([{"name": "errors", "type": "errors"}])
    t = tid(1)
    assert proc.process(SpanBatch([sp(t, 0, parent="")], "b1")).spans == []
    clock.t += 4.9
    assert proc.process(SpanBatch([sp(t, 1, status_code=STATUS_ERROR)], "b2")).spans == []
    assert proc.held_traces == 1 and proc.held_spans == 2
    clock.t += 0.2
    released = proc.process(SpanBatch([], "tick"))  # the runner's empty batch releases by time
    assert len(released.spans) == 2 and proc.held_traces == 0
    assert {s.attributes[ATTR_POLICY] for s in released.spans} == {"errors"}


def test_tail_policies_each_keep_what_they_should() -> None:
    policies = [
        {"name": "errors", "type": "errors"},
        {"name": "slow", "type": "latency", "threshold_ms": 2000},
        {"name": "expensive", "type": "cost", "threshold_usd": 1.0},
        {"name": "vip", "type": "attribute", "key": "user.id", "values": ["vip1"]},
        {"name": "baseline", "type": "probabilistic", "probability": 0.5},
    ]
    proc, clock, telemetry = tail(policies)
    low, high = 0x01, 0xFFFFFFFFFFFFF0
    t_err, t_slow, t_cost, t_vip, t_lucky, t_none = (tid(low, 1), tid(low, 2), tid(low, 3), tid(low, 4),
                                                      tid(high, 5), tid(low, 6))  # fmt: skip
    spans = [
        sp(t_err, 0, status_code=STATUS_ERROR),
        sp(t_slow, 1, start_ns=0, end_ns=10**9),
        sp(t_slow, 2, start_ns=10**9, end_ns=int(2.5e9)),  # trace spans 2.5 s, no single span > 1.5 s
        sp(t_cost, 3, attrs={"gen_ai.usage.cost_usd": 0.6}),
        sp(t_cost, 4, attrs={"gen_ai.usage.cost_usd": "0.5"}),  # total 1.1 over the trace
        sp(t_vip, 5, resource=Resource({"service.name": "api", "user.id": "vip1"})),
        sp(t_lucky, 6),
        sp(t_none, 7, attrs={"gen_ai.usage.cost_usd": 0.9}, end_ns=10**9),
    ]
    proc.process(SpanBatch(spans, "b"))
    clock.t += 6
    out = proc.process(SpanBatch([], "tick")).spans
    by_trace = {s.trace_id: s.attributes[ATTR_POLICY] for s in out}
    assert by_trace == {t_err: "errors", t_slow: "slow", t_cost: "expensive", t_vip: "vip", t_lucky: "baseline"}
    lucky = next(s for s in out if s.trace_id == t_lucky)
    assert lucky.attributes[ATTR_PROBABILITY] == 0.5 and lucky.trace_state == "ot=th:8"
    assert drops(telemetry) == {"sampled_out:baseline": 1}


def test_tail_rate_limit_per_service_and_exemptions() -> None:
    policies = [
        {"name": "errors", "type": "errors"},
        {"name": "all", "type": "probabilistic", "probability": 1.0},
        {"name": "rate", "type": "rate_limit", "traces_per_second": 2, "per": "service", "exempt": ["errors"]},
    ]
    proc, clock, telemetry = tail(policies)
    a = [sp(tid(i, 0xA), i, parent="", service="chat") for i in range(5)]
    b = [sp(tid(i, 0xB), 10 + i, parent="", service="search") for i in range(3)]
    e = [sp(tid(i, 0xE), 20 + i, parent="", service="chat", status_code=STATUS_ERROR) for i in range(3)]
    proc.process(SpanBatch(a + b + e, "b"))
    clock.t += 6
    out = proc.process(SpanBatch([], "t")).spans
    services = [s.service_name for s in out if s.attributes[ATTR_POLICY] == "all"]
    assert services.count("chat") == 2 and services.count("search") == 2  # burst 2 per service
    assert sum(1 for s in out if s.attributes[ATTR_POLICY] == "errors") == 3  # exempt
    assert drops(telemetry) == {"sampled_out:rate": 4}
    clock.t += 1.0  # refills two tokens per second
    more = [sp(tid(50 + i, 0xC), 30 + i, parent="", service="chat") for i in range(3)]
    proc.process(SpanBatch(more, "b2"))
    clock.t += 6
    assert len(proc.process(SpanBatch([], "t2")).spans) == 2


def test_tail_daily_cap_counts_per_utc_day_in_the_state_table() -> None:
    wall = FakeClock(1_732_320_000.0)  # 2024-11-23 00:00 UTC
    policies = [
        {"name": "all", "type": "probabilistic", "probability": 1.0},
        {"name": "cap", "type": "daily_cap", "max_traces": 3},
    ]
    proc, clock, telemetry = tail(policies, wall=wall)
    proc.process(SpanBatch([sp(tid(i), i) for i in range(5)], "b"))
    clock.t += 6
    assert len(proc.process(SpanBatch([], "t")).spans) == 3
    assert proc._daily == {"cap/2024-11-23": 3}
    wall.t += 86_400  # next UTC day: the cap starts over
    proc.process(SpanBatch([sp(tid(100 + i), i) for i in range(2)], "b2"))
    clock.t += 6
    assert len(proc.process(SpanBatch([], "t2")).spans) == 2
    assert proc._daily == {"cap/2024-11-24": 2}
    assert drops(telemetry) == {"sampled_out:cap": 2}


def test_tail_memory_is_bounded_and_full_buffer_decides_the_oldest_early() -> None:
    proc, _clock, telemetry = tail([{"name": "all", "type": "probabilistic", "probability": 1.0}], max_traces=3)
    out = []
    for i in range(5):
        out += proc.process(SpanBatch([sp(tid(i + 1), i)], f"b{i}")).spans
        assert proc.held_traces <= 3
    assert [s.trace_id for s in out] == [tid(1), tid(2)]  # oldest first, before their wait
    early = telemetry.sampling_early_decisions.labels("sample")._value.get()
    assert early == 2
    proc2, _, _ = tail([{"name": "all", "type": "probabilistic", "probability": 1.0}], max_spans=4)
    released = proc2.process(SpanBatch([sp(tid(1), i) for i in range(3)] + [sp(tid(2), 9 + i) for i in range(3)], "b"))
    assert proc2.held_spans <= 4 and len(released.spans) == 3


def test_late_spans_follow_the_trace_decision() -> None:
    proc, clock, telemetry = tail(
        [{"name": "errors", "type": "errors"}, {"name": "p", "type": "probabilistic", "probability": 0.5}]
    )
    keep, drop = tid(0xF0000000000000, 1), tid(0x01, 2)
    proc.process(SpanBatch([sp(keep, 0), sp(drop, 1)], "b"))
    clock.t += 6
    assert ids(proc.process(SpanBatch([], "t")).spans) == {keep}
    late = proc.process(SpanBatch([sp(keep, 2), sp(drop, 3, status_code=STATUS_ERROR)], "late"))
    assert [s.trace_id for s in late.spans] == [keep]  # released at once, no second wait
    assert late.spans[0].attributes[ATTR_POLICY] == "p"
    assert proc.held_traces == 0 and drops(telemetry)["sampled_out:p"] == 2


def test_flush_decides_and_releases_everything_held() -> None:
    proc, _, _ = tail()  # default policies: errors, probabilistic at `probability` (0.1)
    spans = [sp(tid(0xFFFFFFFFFFFFF0, i), i) for i in range(10)] + [sp(tid(0x01, 99), 99, status_code=STATUS_ERROR)]
    assert proc.process(SpanBatch(spans, "b")).spans == []
    held = proc.flush()
    assert len(held) == 11 and proc.held_traces == 0 and proc.held_spans == 0
    assert proc.flush() == []


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="policies apply to mode: tail"):
        SampleConfig.model_validate({"policies": [{"name": "e", "type": "errors"}]})
    with pytest.raises(ValidationError, match="threshold_ms is required"):
        SampleConfig.model_validate({"mode": "tail", "policies": [{"name": "l", "type": "latency"}]})
    with pytest.raises(ValidationError, match="unique"):
        SampleConfig.model_validate({"mode": "tail", "policies": [{"name": "e", "type": "errors"}] * 2})
    with pytest.raises(ValidationError):
        SampleConfig.model_validate({"probability": 0})


def test_registered_in_the_processor_registry() -> None:
    from processors import PROCESSOR_FACTORIES

    assert PROCESSOR_FACTORIES["sample"].config_model is SampleConfig


def test_held_batches_name_the_transport_batches_still_held() -> None:
    proc, clock, _ = tail([{"name": "all", "type": "probabilistic", "probability": 1.0}])
    proc.process(SpanBatch([sp(tid(1), 0), sp(tid(2), 1)], "p0/o10"))
    clock.t += 3
    proc.process(SpanBatch([sp(tid(2), 2), sp(tid(3), 3)], "p0/o11"))
    assert proc.held_batches() == {"p0/o10", "p0/o11"}
    clock.t += 2.5  # trace 1 and 2 due (first seen at t=0); trace 3 not yet
    assert len(proc.process(SpanBatch([], "tick")).spans) == 3
    assert proc.held_batches() == {"p0/o11"}
    proc.flush()
    assert proc.held_batches() == set()
