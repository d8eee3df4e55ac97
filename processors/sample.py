"""sample processor: head sampling by trace id, or tail sampling over buffered traces.

Both modes use OpenTelemetry consistent probability sampling (processors/sampling_math.py):
randomness = the trace id's lower 56 bits (or `rv` in tracestate), kept iff randomness >=
the rejection threshold of the probability. The same trace id gets the same decision at
the same rate in every service, process and run, and agrees with OTel SDK
TraceIdRatioBased samplers (spec 1.x) and the Collector's probabilisticsampler in
proportional/equalizing mode.

Kept spans record how they were kept, so counts and costs can be extrapolated
(sum(1 / tracepipe.sampling.probability)):
- `tracepipe.sampling.probability` (float) and `tracepipe.sampling.policy` (string),
- for probabilistic keeps, the tracestate `ot=th:<threshold>` entry of the OTel spec
  (other `ot` sub-keys and vendors' entries are kept). Always-keep rules keep with
  probability 1 and leave tracestate alone. An upstream `th` (SDK head sampling) is
  honoured: the effective threshold is the larger one (the Collector's "equalizing").

mode: head — one decision per trace id per batch. `always_keep` conditions (the Lumina
seeds' alwaysSampleConditions: error, cost above, latency above, attribute in a list)
force the whole trace's spans in that batch, and the trace id is remembered (bounded
LRU) so its later spans are kept too. Spans of the trace that went by earlier are not
recalled: that is what tail mode is for.

mode: tail — spans are buffered per trace for `decision_wait` seconds after the trace's
first span arrived, judged by an injectable monotonic clock (time.monotonic by default;
span timestamps are not used because replays and clock skew would make them lie). Then
the policies decide the whole trace:
- keep policies, first match wins: `always_keep` conditions over any span, then
  `errors`, `latency` (trace duration), `cost` (sum of gen_ai.usage.cost_usd),
  `attribute` (span or resource attribute value in a list), `probabilistic`;
- limits on what was kept, unless the keeping policy is in their `exempt` list:
  `rate_limit` (traces per second per service, token bucket) and `daily_cap` (traces
  per UTC day).
Memory is bounded by `max_traces` and `max_spans`: when full, the oldest traces are
decided early (tracepipe_sampling_early_decisions_total). Late spans of a decided trace
follow the decision (bounded LRU of decisions). `process()` returns what was released
now; the runner calls it with empty batches every `service.batch.timeout` so time
releases spans; `flush()` decides and returns everything held.

Batch ids: head mode passes on a subset of the batch under the batch's id. Tail mode
passes on spans held from earlier batches, so its output is named by its sources and
content (`smp-<sha256 prefix>`, pipeline/batch_ids.py): a redelivery that releases the
same spans from the same source batches, on whatever batch or tick, gets the same id and
ClickHouse stores it once; a release with other content (other decisions, another
grouping) never reuses an id. A redelivery that groups the same spans into other releases
is stored again: only persisted buffers would make the grouping repeat exactly.

State: the span buffer and decision caches are per-process memory (embedded mode).
The daily cap counter lives in the state interface (`ctx.state.table`). In the
distributed runtime Kafka partitions by trace id, so one worker sees a whole trace, but
held spans belong to batches whose offsets the worker would commit once the sinks acked
what was released: the worker must not commit past the oldest batch in `held_batches()`
(or the buffer must be persisted), else a crash loses held spans.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline import semconv
from pipeline.batch_ids import derived_batch, source_ids
from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.spans import STATUS_ERROR, Span, SpanBatch, attr_float
from processors.holding import HoldsSpans
from processors.sampling_math import (
    incoming_threshold,
    probability_to_threshold,
    randomness,
    threshold_to_probability,
    with_threshold,
)

ATTR_PROBABILITY = "tracepipe.sampling.probability"
ATTR_POLICY = "tracepipe.sampling.policy"
COST_ATTR = semconv.GEN_AI_COST_USD


class AlwaysKeepConfig(ComponentConfig):
    """Conditions that keep a trace whatever the probability (Lumina `alwaysSampleConditions`)."""

    error: bool = Field(True, description="Keep traces with a span whose status is Error.")
    cost_usd_above: float | None = Field(
        None, ge=0, description="Keep when a span's gen_ai.usage.cost_usd exceeds this."
    )
    duration_ms_above: float | None = Field(None, ge=0, description="Keep when a span lasts longer than this (ms).")
    attributes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Keep when a span/resource attribute has one of these values (user.id: [vip1]).",
    )


PolicyType = Literal["errors", "latency", "cost", "attribute", "probabilistic", "rate_limit", "daily_cap"]
_LIMITS = ("rate_limit", "daily_cap")


class TailPolicyConfig(ComponentConfig):
    name: str = Field(..., min_length=1, description="Label of the policy in metrics and in tracepipe.sampling.policy.")
    type: PolicyType
    threshold_ms: float | None = Field(None, gt=0, description="latency: trace duration at or above this keeps.")
    threshold_usd: float | None = Field(None, gt=0, description="cost: trace total cost at or above this keeps.")
    key: str | None = Field(None, description="attribute: the attribute key.")
    values: list[str] = Field(default_factory=list, description="attribute: values that keep.")
    probability: float | None = Field(None, gt=0, le=1, description="probabilistic: keep probability.")
    traces_per_second: float | None = Field(None, gt=0, description="rate_limit: kept traces per second.")
    burst: float | None = Field(None, gt=0, description="rate_limit: bucket size (default: max(1, rate)).")
    per: Literal["service", "all"] = Field("service", description="rate_limit: one bucket per root service, or one.")
    max_traces: int | None = Field(None, gt=0, description="daily_cap: kept traces per UTC day.")
    exempt: list[str] = Field(
        default_factory=list, description="Limits: keep-policy names the limit does not apply to."
    )

    @model_validator(mode="after")
    def _fields_for_type(self) -> TailPolicyConfig:
        need = {
            "latency": "threshold_ms",
            "cost": "threshold_usd",
            "attribute": "key",
            "probabilistic": "probability",
            "rate_limit": "traces_per_second",
            "daily_cap": "max_traces",
        }.get(self.type)
        if need and getattr(self, need) is None:
            raise ValueError(f"{need} is required for a {self.type} policy")
        if self.type == "attribute" and not self.values:
            raise ValueError("values is required for an attribute policy")
        return self


class SampleConfig(ComponentConfig):
    mode: Literal["head", "tail"] = Field("head", description="head: decide per span by trace id; tail: buffer traces.")
    probability: float = Field(
        0.1, gt=0, le=1, description="head: keep probability; tail: of the default probabilistic policy."
    )
    precision: int = Field(4, ge=1, le=14, description="Hex digits of the threshold (Collector sampling_precision).")
    always_keep: AlwaysKeepConfig = Field(default_factory=AlwaysKeepConfig)
    record: bool = Field(True, description="Write tracepipe.sampling.* attributes and tracestate th on kept spans.")
    remember_traces: int = Field(
        100_000, gt=0, description="Trace ids whose decision is remembered for late spans (LRU)."
    )
    # --- tail ------------------------------------------------------------------------------
    decision_wait: float = Field(10.0, gt=0, description="tail: seconds after a trace's first span before deciding.")
    max_traces: int = Field(50_000, gt=0, description="tail: traces held at most; beyond, the oldest are decided.")
    max_spans: int = Field(1_000_000, gt=0, description="tail: spans held at most; beyond, the oldest are decided.")
    policies: list[TailPolicyConfig] | None = Field(
        None, description="tail: policies (default: errors, then probabilistic at `probability`)."
    )

    @model_validator(mode="after")
    def _policies_for_tail(self) -> SampleConfig:
        if self.mode == "head" and self.policies is not None:
            raise ValueError("policies apply to mode: tail (head mode uses probability and always_keep)")
        if self.policies is not None:
            names = [p.name for p in self.policies]
            if len(set(names)) != len(names):
                raise ValueError("policy names must be unique")
        return self


class _Pending:
    __slots__ = ("batches", "deadline", "spans")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.spans: list[Span] = []
        self.batches: set[str] = set()  # ids of the transport batches these spans came in


class _Decision:
    __slots__ = ("keep", "policy", "probability", "threshold")

    def __init__(self, keep: bool, policy: str, probability: float, threshold: int | None) -> None:
        self.keep = keep
        self.policy = policy
        self.probability = probability
        self.threshold = threshold


class SampleProcessor(HoldsSpans, BaseProcessor):
    def __init__(
        self,
        component_id: str,
        config: SampleConfig,
        ctx: ComponentContext,
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self.clock = clock or ctx.services.clock or time.monotonic
        self.wall_clock = wall_clock or ctx.services.wall_clock or time.time
        self.threshold = probability_to_threshold(config.probability, config.precision)
        ak = config.always_keep
        self._ak_attrs = {k: frozenset(v) for k, v in ak.attributes.items()}
        self._ak_duration_ns = int(ak.duration_ms_above * 1e6) if ak.duration_ms_above is not None else None
        self._decided: OrderedDict[str, _Decision] = OrderedDict()
        t = ctx.telemetry
        self._traces_metric = t.sampling_traces
        self._spans_metric = t.sampling_spans
        # tail
        self._buffer: OrderedDict[str, _Pending] = OrderedDict()
        self._held_spans = 0
        policies = config.policies
        if policies is None:
            policies = [
                TailPolicyConfig(name="errors", type="errors"),
                TailPolicyConfig(name="probabilistic", type="probabilistic", probability=config.probability),
            ]
        self.keep_policies = [p for p in policies if p.type not in _LIMITS]
        self.limit_policies = [p for p in policies if p.type in _LIMITS]
        self._policy_thresholds = {
            p.name: probability_to_threshold(p.probability, config.precision)
            for p in self.keep_policies
            if p.type == "probabilistic" and p.probability is not None
        }
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (policy, service) -> (tokens, at)
        self._daily = ctx.state.table(f"{component_id}.daily_cap")

    # --- always-keep conditions (per span) ------------------------------------------------

    def _always_keep(self, span: Span) -> str | None:
        ak = self.config.always_keep
        if ak.error and span.status_code == STATUS_ERROR:
            return "always_keep.error"
        if ak.cost_usd_above is not None:
            cost = attr_float(span.attributes, COST_ATTR)
            if cost is not None and cost > ak.cost_usd_above:
                return "always_keep.cost"
        if self._ak_duration_ns is not None and span.end_ns - span.start_ns > self._ak_duration_ns:
            return "always_keep.latency"
        for key, values in self._ak_attrs.items():
            v = span.attributes.get(key)
            if v is None:
                v = span.resource.attributes.get(key)
            if v is not None and str(v) in values:
                return "always_keep.attribute"
        return None

    def _remember(self, trace_id: str, decision: _Decision) -> None:
        self._decided[trace_id] = decision
        self._decided.move_to_end(trace_id)
        if len(self._decided) > self.config.remember_traces:
            self._decided.popitem(last=False)

    def _probabilistic(self, trace_id: str, trace_state: str, threshold: int, policy: str) -> _Decision:
        upstream = incoming_threshold(trace_state)
        effective = threshold if upstream is None or upstream < threshold else upstream
        keep = randomness(trace_id, trace_state) >= effective
        return _Decision(keep, policy, threshold_to_probability(effective), effective)

    def _mark(self, span: Span, d: _Decision) -> None:
        if not self.config.record:
            return
        attrs = span.attributes
        if d.threshold is not None:
            attrs[ATTR_PROBABILITY] = d.probability
            span.trace_state = with_threshold(span.trace_state, d.threshold)
        else:
            upstream = incoming_threshold(span.trace_state)
            attrs[ATTR_PROBABILITY] = 1.0 if upstream is None else threshold_to_probability(upstream)
        attrs[ATTR_POLICY] = d.policy

    def _count(self, d: _Decision, n_spans: int) -> None:
        decision = "kept" if d.keep else "dropped"
        self._traces_metric.labels(self.component_id, decision, d.policy).inc()
        self._spans_metric.labels(self.component_id, decision, d.policy).inc(n_spans)
        if not d.keep:
            self.ctx.telemetry.count_drop(self.component_id, f"sampled_out:{d.policy}", n_spans)

    # --- the hot path ----------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        if self.config.mode == "head":
            return self._process_head(batch)
        return self._process_tail(batch)

    def _process_head(self, batch: SpanBatch) -> SpanBatch:
        spans = batch.spans
        if not spans:
            return batch
        by_trace: dict[str, list[Span]] = {}
        for s in spans:
            group = by_trace.get(s.trace_id)
            if group is None:
                by_trace[s.trace_id] = [s]
            else:
                group.append(s)
        kept: list[Span] = []
        for trace_id, group in by_trace.items():
            d = self._decided.get(trace_id)
            if d is None or not d.keep:
                reason = None
                for s in group:
                    reason = self._always_keep(s)
                    if reason is not None:
                        break
                if reason is not None:
                    d = _Decision(True, reason, 1.0, None)
                    self._remember(trace_id, d)  # later spans of this trace are kept too
                elif d is None:
                    first = group[0]
                    d = self._probabilistic(trace_id, first.trace_state, self.threshold, "probabilistic")
            self._count(d, len(group))
            if d.keep:
                for s in group:
                    self._mark(s, d)
                kept.extend(group)
        if len(kept) == len(spans):
            return batch
        return batch.with_spans(kept)

    # --- tail ------------------------------------------------------------------------------

    def _process_tail(self, batch: SpanBatch) -> SpanBatch:
        now = self.clock()
        out: list[Span] = []
        buffer = self._buffer
        late: dict[str, list[Span]] = {}
        own_sources = source_ids(batch)
        sources: set[str] = set()
        for s in batch.spans:
            tid = s.trace_id
            pending = buffer.get(tid)
            if pending is None:
                d = self._decided.get(tid)
                if d is not None:
                    late.setdefault(tid, []).append(s)
                    continue
                pending = buffer[tid] = _Pending(now + self.config.decision_wait)
            pending.batches.update(own_sources)
            pending.spans.append(s)
            self._held_spans += 1
        for tid, group in late.items():
            d = self._decided[tid]
            self._spans_metric.labels(self.component_id, "kept" if d.keep else "dropped", d.policy).inc(len(group))
            if d.keep:
                for s in group:
                    self._mark(s, d)
                out.extend(group)
                sources.update(own_sources)
            else:
                self.ctx.telemetry.count_drop(self.component_id, f"sampled_out:{d.policy}", len(group))
        cfg = self.config
        early = 0
        while buffer and (len(buffer) > cfg.max_traces or self._held_spans > cfg.max_spans):
            tid, pending = buffer.popitem(last=False)
            early += 1
            self._release(tid, pending, now, out, sources)
        if early:
            self.ctx.telemetry.sampling_early_decisions.labels(self.component_id).inc(early)
        while buffer:
            tid, pending = next(iter(buffer.items()))
            if pending.deadline > now:
                break
            del buffer[tid]
            self._release(tid, pending, now, out, sources)
        self._gauges()
        if not out:
            return batch.with_spans(out)
        return derived_batch("smp", batch, out, sources)

    def _gauges(self) -> None:
        t = self.ctx.telemetry
        t.sampling_buffered_traces.labels(self.component_id).set(len(self._buffer))
        t.sampling_buffered_spans.labels(self.component_id).set(self._held_spans)

    def _release(self, trace_id: str, pending: _Pending, now: float, out: list[Span], sources: set[str]) -> None:
        spans = pending.spans
        self._held_spans -= len(spans)
        d = self._decide_trace(trace_id, spans, now)
        self._remember(trace_id, d)
        self._count(d, len(spans))
        if d.keep:
            for s in spans:
                self._mark(s, d)
            out.extend(spans)
            sources |= pending.batches

    def _decide_trace(self, trace_id: str, spans: list[Span], now: float) -> _Decision:
        d: _Decision | None = None
        for s in spans:
            reason = self._always_keep(s)
            if reason is not None:
                d = _Decision(True, reason, 1.0, None)
                break
        if d is None:
            dropped_by = "no_policy"
            for p in self.keep_policies:
                if p.type == "probabilistic":
                    cand = self._probabilistic(trace_id, spans[0].trace_state, self._policy_thresholds[p.name], p.name)
                    if cand.keep:
                        d = cand
                        break
                    dropped_by = p.name
                elif self._matches(p, spans):
                    d = _Decision(True, p.name, 1.0, None)
                    break
            if d is None:
                return _Decision(False, dropped_by, 0.0, None)
        for limit in self.limit_policies:
            if d.policy in limit.exempt:
                continue
            if not self._limit_allows(limit, spans, now):
                return _Decision(False, limit.name, 0.0, None)
        return d

    @staticmethod
    def _matches(p: TailPolicyConfig, spans: list[Span]) -> bool:
        if p.type == "errors":
            return any(s.status_code == STATUS_ERROR for s in spans)
        if p.type == "latency":
            start = min(s.start_ns for s in spans)
            end = max(s.end_ns for s in spans)
            return (end - start) / 1e6 >= (p.threshold_ms or 0)
        if p.type == "cost":
            total = 0.0
            for s in spans:
                c = attr_float(s.attributes, COST_ATTR)
                if c is not None:
                    total += c
            return total >= (p.threshold_usd or 0)
        if p.type == "attribute":
            wanted = set(p.values)
            key = p.key or ""
            for s in spans:
                v = s.attributes.get(key)
                if v is None:
                    v = s.resource.attributes.get(key)
                if v is not None and str(v) in wanted:
                    return True
            return False
        return False

    def _limit_allows(self, p: TailPolicyConfig, spans: list[Span], now: float) -> bool:
        if p.type == "rate_limit":
            rate = p.traces_per_second or 1.0
            burst = p.burst or max(1.0, rate)
            service = _root_service(spans) if p.per == "service" else "*"
            key = (p.name, service)
            tokens, at = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # services are few; guard against a flood of names
                self._buckets.clear()
            return True
        if p.type == "daily_cap":
            day = datetime.fromtimestamp(self.wall_clock(), UTC).strftime("%Y-%m-%d")
            key = f"{p.name}/{day}"
            count = int(self._daily.get(key, 0))
            if count >= (p.max_traces or 0):
                return False
            if key not in self._daily:
                for old in [k for k in self._daily if k.startswith(f"{p.name}/")]:
                    del self._daily[old]
            self._daily[key] = count + 1
            return True
        return True

    def flush(self) -> list[Any]:
        """Decide every held trace now and return the kept spans (shutdown)."""
        out: list[Span] = []
        sources: set[str] = set()
        now = self.clock()
        while self._buffer:
            tid, pending = self._buffer.popitem(last=False)
            self._release(tid, pending, now, out, sources)
        self._gauges()
        return out


def _root_service(spans: list[Span]) -> str:
    for s in spans:
        if not s.parent_span_id:
            return s.service_name
    return spans[0].service_name


factory = Factory(
    "sample",
    SampleConfig,
    SampleProcessor,
    "Head (consistent probability by trace id) or tail (buffered, policy-based) sampling with always-keep rules.",
)
