"""anomaly processor: windowed aggregates per key, learned baselines, alert rules.

What it does: counts calls, errors, cost, tokens and a latency sketch per key (service,
model, operation, provider, feature, user tier — `group_by`) over tumbling or hopping
event-time windows; learns an EWMA baseline per key and metric from past windows; checks
YAML rules (relative change, absolute threshold, z-score, with a minimum volume) when a
window closes, and emits one `firing` event when a rule breaks and one `resolved` event
when the value is normal again. Spans pass through unchanged.

How it works:
- Event time is the span end time. A pane is one hop of one key; a window is the merge
  of size/hop panes (see pipeline/anomaly/windows.py). Windows close when the watermark
  (newest end time seen — distributed: the oldest of the newest per span-topic partition —,
  or the wall clock when idle for `idle_close`, minus `allowed_lateness`) passes their end;
  spans ending in an already closed pane are counted as late
  (`tracepipe_anomaly_unwindowed_spans_total{reason="late"}`), spans from the far future
  likewise (reason="future").
- Keys are per tracepipe tenant (pipeline/tenants.py): a tenant other than "default" prefixes
  its keys (`<tenant>\x1e<key>`), so two tenants never share a window, baseline or alert; events
  carry `tenant`. Tenant "default" keeps the single-tenant keys (existing state carries on).
- Two steps (pipeline/anomaly/contribution.py): each batch's spans are first folded into
  pane contributions per (key, pane start), then merged by the window evaluator
  (pipeline/anomaly/evaluator.py), which closes windows and checks rules. Embedded, both run
  here. In the distributed worker (`Services.anomaly_panes` set) this processor only
  contributes: the worker publishes contributions to the panes topic keyed by the anomaly key,
  and the evaluator of the key's partition merges them (pipeline/worker/anomaly_panes.py), so
  a rule means the same with 1 or 12 workers.
- All state lives in `ctx.state.table("anomaly/<id>")` (embedded; distributed:
  `anomaly-fleet/<id>`, one changelog partition per panes-topic partition) as JSON data: one
  value per key (panes, baselines, rule states) plus a `__meta__` value (watermark, closed
  boundary, counters). Each touched key is written back once per merge, which is what a Faust
  table with a changelog needs. A processor re-created over the same table continues where
  the old one stopped.
- Alerts: per (key, rule) a small state machine — `for_windows` anomalous windows to
  fire, `resolve_windows` normal windows to resolve, no second firing within `cooldown`
  of the last one (event time), never two `firing` events without a `resolved` between.
  Events leave through `ctx.emit_event("anomaly", event)`.
- The runner calls `process()` with an empty batch when idle: that is when the wall
  clock (injectable: `clock=`) closes windows of keys that went quiet (distributed: the
  worker ticks each evaluator it owns).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline import semconv
from pipeline.anomaly.config import AnomalyConfig
from pipeline.anomaly.contribution import PaneExchange, contribute
from pipeline.anomaly.evaluator import (
    EVENT_KIND,
    META,
    SEP,
    TENANT_SEP,
    EventSink,
    WindowEvaluator,
    split_tenant,
)
from pipeline.anomaly.sketch import SketchMapping
from pipeline.component import BaseProcessor, ComponentContext, Factory
from pipeline.semconv import model_of
from pipeline.spans import Span, SpanBatch
from pipeline.tenants import DEFAULT_TENANT, MAX_TENANT_LENGTH, TENANT_ATTRIBUTE, tenant_of

__all__ = ["EVENT_KIND", "META", "AnomalyProcessor", "key_function", "split_tenant", "tenant_key_function"]

_ATTRIBUTE_OF = {
    "operation": semconv.GEN_AI_OPERATION,
    "provider": semconv.GEN_AI_PROVIDER,
    "feature": "app.feature",
    "user_tier": "user.tier",
}


def _dimension_getter(dim: str) -> Callable[[Span], Any]:
    """span -> the value of one key dimension (falsy values mean "not set")."""
    if dim == "service":
        return lambda s: s.resource.attributes.get("service.name") or "unknown_service"
    if dim == "model":
        return lambda s: model_of(s.attributes) or ""
    attr = _ATTRIBUTE_OF[dim]
    return lambda s: s.attributes.get(attr) or ""


def key_function(dims: list[str]) -> Callable[[Span], str]:
    """span -> the key string of its dimensions, joined by \\x1f (f-strings: any value type)."""
    getters = [_dimension_getter(d) for d in dims]
    if len(getters) == 1:
        g0 = getters[0]
        return lambda s: f"{g0(s)}"
    if len(getters) == 2:
        g0, g1 = getters
        return lambda s: f"{g0(s)}\x1f{g1(s)}"
    if len(getters) == 3:
        g0, g1, g2 = getters
        return lambda s: f"{g0(s)}\x1f{g1(s)}\x1f{g2(s)}"
    return lambda s: SEP.join([f"{g(s)}" for g in getters])


def tenant_key_function(dims: list[str]) -> Callable[[Span], str]:
    """span -> its key, prefixed by its tenant (pipeline/tenants.py) unless that is "default".
    Inlined: this runs per span."""
    key_of = key_function(dims)

    def key(s: Span) -> str:
        t = s.resource.attributes.get(TENANT_ATTRIBUTE)
        if t.__class__ is not str or not t or t == DEFAULT_TENANT:
            return key_of(s)
        if len(t) > MAX_TENANT_LENGTH:
            t = tenant_of(s)
        return t + TENANT_SEP + key_of(s)

    return key


class AnomalyProcessor(BaseProcessor):
    def __init__(
        self,
        component_id: str,
        config: AnomalyConfig,
        ctx: ComponentContext,
        *,
        clock: Callable[[], float] | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self.clock = clock or time.time
        self._emit: EventSink | None = on_event or ctx.emit_event
        self.key_of = tenant_key_function(list(config.group_by))
        self.hop_ns = round(config.window.hop_seconds * 1e9)
        self.skew_ns = round(config.max_clock_skew * 1e9)
        self.inv_log_gamma = SketchMapping(config.relative_accuracy).inv_log_gamma
        self.k = config.example_traces
        self.rules = list(config.rules)
        self._m_future = ctx.telemetry.anomaly_unwindowed_spans.labels(component_id, "future")
        self.exchange: PaneExchange | None = getattr(ctx.services, "anomaly_panes", None)
        if self.exchange is not None:
            # Distributed: evaluators per panes-topic partition over this table (created now: before the app starts).
            self.fleet_table = ctx.state.table(f"anomaly-fleet/{component_id}")
            self.exchange.register(self)
        self.evaluator = WindowEvaluator(component_id, config, ctx.state.table(f"anomaly/{component_id}"),
                                         ctx.telemetry, clock=self.clock, emit=self._emit)

    def evaluator_for(self, partition: int, partitions: int) -> WindowEvaluator:
        """The evaluator of one panes-topic partition's keys (distributed)."""
        return WindowEvaluator(self.component_id, self.config, self.fleet_table, self.ctx.telemetry,
                               clock=self.clock, emit=self._emit, partition=partition, partitions=partitions)

    # --- the Processor protocol ------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        ev = self.evaluator
        if batch.spans:
            future_limit = int(self.clock() * 1e9) + self.skew_ns
            dirty: dict[str, Any] = {}
            # Embedded: spans fold straight into the state's open panes; a worker sends fresh ones.
            existing = ev.open_pane_of(dirty) if self.exchange is None else None
            panes, max_end, future = contribute(batch.spans, self.key_of, self.hop_ns, self.k, self.inv_log_gamma,
                                                future_limit, existing)
            if future:
                self._m_future.inc(future)
            if self.exchange is not None:
                self.exchange.publish(self.component_id, batch, panes, max_end)
                return batch
            ev.meta["future"] += future
            ev.merge(panes, max_end, dirty)
        elif self.exchange is not None:
            return batch  # the worker ticks its evaluators itself
        else:
            dirty = {}
        ev.advance(dirty)
        ev.write(dirty)
        return batch

    # --- what tests and the API read (embedded evaluator) -----------------------------

    @property
    def table(self) -> Any:
        return self.evaluator.table

    @property
    def meta(self) -> dict[str, Any]:
        self.evaluator.load()
        return self.evaluator.meta

    @property
    def n_keys(self) -> int:
        return self.evaluator.n_keys

    def watermark_boundary(self) -> int | None:
        return self.evaluator.watermark_boundary()

    def fingerprint(self, rule: str, ks: str) -> str:
        return self.evaluator.fingerprint(rule, ks)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the API: keys tracked, late/future/overflow spans, watermark."""
        self.evaluator.load()
        return self.evaluator.stats()


def create(component_id: str, config: AnomalyConfig, ctx: ComponentContext) -> AnomalyProcessor:
    return AnomalyProcessor(component_id, config, ctx)


factory = Factory(
    "anomaly",
    AnomalyConfig,
    create,
    "Windowed per-key aggregates, EWMA baselines and alert rules (cost spikes, latency, errors, prompt bloat).",
)
