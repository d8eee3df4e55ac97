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
  (newest end time seen, or the wall clock when idle for `idle_close`, minus
  `allowed_lateness`) passes their end; spans ending in an already closed pane are
  counted as late (`tracepipe_anomaly_unwindowed_spans_total{reason="late"}`), spans
  from the far future likewise (reason="future").
- Keys are per tracepipe tenant (pipeline/tenants.py): a tenant other than "default" prefixes
  its keys (`<tenant>\x1e<key>`), so two tenants never share a window, baseline or alert; events
  carry `tenant`. Tenant "default" keeps the single-tenant keys (existing state carries on).
- All state lives in `ctx.state.table("anomaly/<id>")` as JSON data: one value per key
  (panes, baselines, rule states) plus a `__meta__` value (watermark, closed boundary,
  counters). Each touched key is written back once per `process()` call, which is what
  a Faust table with a changelog needs (updates inside stream iteration, per batch). A
  processor re-created over the same table continues where the old one stopped.
- Alerts: per (key, rule) a small state machine — `for_windows` anomalous windows to
  fire, `resolve_windows` normal windows to resolve, no second firing within `cooldown`
  of the last one (event time), never two `firing` events without a `resolved` between.
  Events leave through `ctx.emit_event("anomaly", event)`.
- The runner calls `process()` with an empty batch when idle: that is when the wall
  clock (injectable: `clock=`) closes windows of keys that went quiet.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline import semconv
from pipeline.anomaly import baseline as bl
from pipeline.anomaly.config import AnomalyConfig, RuleConfig
from pipeline.anomaly.rules import Verdict, judge
from pipeline.anomaly.sketch import SketchMapping
from pipeline.anomaly.windows import (
    P_BINS,
    P_CALLS,
    P_COST,
    P_ERRORS,
    P_EX_COST,
    P_EX_ERR,
    P_EX_LAT,
    P_EX_TOK,
    P_IN,
    P_OUT,
    P_ZEROS,
    WindowAggregate,
    examples_for,
    finite,
    merge_panes,
    new_pane,
    push_top,
    window_metrics,
)
from pipeline.component import BaseProcessor, ComponentContext, Factory
from pipeline.semconv import model_of
from pipeline.spans import STATUS_ERROR, Span, SpanBatch
from pipeline.tenants import DEFAULT_TENANT, MAX_TENANT_LENGTH, TENANT_ATTRIBUTE, tenant_of

META = "__meta__"
SEP = "\x1f"
TENANT_SEP = "\x1e"  # never in a tenant name (see sinks/clickhouse.py's rule) nor produced by key_function
EVENT_KIND = "anomaly"

K_COST = semconv.GEN_AI_COST_USD
K_IN = semconv.GEN_AI_INPUT_TOKENS
K_OUT = semconv.GEN_AI_OUTPUT_TOKENS

# rule state: [active, hit_streak, ok_streak, last_fired_window_end_ns, firing_window_end_ns]
R_ACTIVE, R_HITS, R_OKS, R_LAST_FIRED, R_FIRED_AT = range(5)

EventSink = Callable[[str, dict[str, Any]], None]


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


def split_tenant(ks: str) -> tuple[str, str]:
    """A state key as (tenant, key of the dimensions)."""
    tenant, sep, rest = ks.partition(TENANT_SEP)
    return (tenant, rest) if sep else (DEFAULT_TENANT, ks)


def _number(value: Any) -> float:
    if value is None or value.__class__ is bool:
        return 0.0
    if value.__class__ in (int, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


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
        self.table = ctx.state.table(f"anomaly/{component_id}")
        self.key_of = tenant_key_function(list(config.group_by))
        self.hop_ns = round(config.window.hop_seconds * 1e9)
        self.size_ns = round(config.window.size * 1e9)
        self.lateness_ns = round(config.allowed_lateness * 1e9)
        self.idle_ns = None if config.idle_close is None else round(config.idle_close * 1e9)
        self.skew_ns = round(config.max_clock_skew * 1e9)
        self.ttl_ns = round(config.key_ttl * 1e9)
        self.mapping = SketchMapping(config.relative_accuracy)
        self.alpha = bl.alpha_for(config.baseline.horizon, config.window.hop_seconds)
        self.k = config.example_traces
        self.rules: list[RuleConfig] = list(config.rules)
        self.wanted = frozenset(r.metric for r in self.rules)
        self.learned = sorted({r.metric for r in self.rules if r.kind != "absolute"})
        self.overflow_key = SEP.join(["other"] * len(config.group_by))
        self.meta: dict[str, Any] = {"wm": None, "closed": None, "late": 0, "future": 0, "overflow": 0}
        self.n_keys = 0
        self._loaded = False  # state is read at the first batch: a Faust table is recovered after construction
        self._pending: dict[str, Any] = {}  # writes of idle ticks, applied with the next batch
        t = ctx.telemetry
        self._m_late = t.anomaly_unwindowed_spans.labels(component_id, "late")
        self._m_future = t.anomaly_unwindowed_spans.labels(component_id, "future")
        self._m_overflow = t.anomaly_unwindowed_spans.labels(component_id, "key_overflow")
        self._m_keys = t.anomaly_keys.labels(component_id)
        self._m_windows = t.anomaly_windows_evaluated.labels(component_id)
        self._m_suppressed = t.anomaly_alerts_suppressed

    def _load(self) -> None:
        meta = self.table.get(META)
        if meta:
            self.meta.update(meta)
        self.n_keys = sum(1 for k in self.table if k != META)
        self._m_keys.set(self.n_keys)
        self._loaded = True

    # --- the Processor protocol ------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not self._loaded:
            self._load()
        dirty = self._pending
        if batch.spans:
            self._ingest(batch.spans, dirty)
        self._advance(dirty)
        if not batch.spans:
            # An idle tick runs outside stream iteration, where a Faust table cannot be
            # written: keep its changes (already live in this process) for the next batch.
            return batch
        table = self.table
        for ks, st in dirty.items():
            if st is None:
                table.pop(ks, None)
            else:
                table[ks] = st
        table[META] = dict(self.meta)
        self._pending = {}
        return batch

    # --- ingest: the per-span hot path -----------------------------------------------

    def _ingest(self, spans: list[Span], dirty: dict[str, Any]) -> None:
        meta = self.meta
        hop = self.hop_ns
        closed = meta["closed"]
        max_end = meta["wm"] if meta["wm"] is not None else -(2**63)
        future_limit = int(self.clock() * 1e9) + self.skew_ns
        k = self.k
        key_of = self.key_of
        log = math.log
        ceil = math.ceil
        inv = self.mapping.inv_log_gamma
        table = self.table
        panes_cache: dict[tuple[str, int], list[Any]] = {}
        pane_keys: dict[int, str] = {}
        late = future = overflow = 0
        first_pane = None  # before the first span nothing is closed: windows start at its pane
        for s in spans:
            end = s.end_ns
            if end > future_limit:
                future += 1
                continue
            ps = end - end % hop
            if closed is not None and ps < closed:
                late += 1
                continue
            if end > max_end:
                max_end = end
            if closed is None and (first_pane is None or ps < first_pane):
                first_pane = ps
            ks = key_of(s)
            pane = panes_cache.get((ks, ps))
            if pane is None:
                st = dirty.get(ks)
                if st is None:
                    st = table.get(ks)
                    if st is None:
                        if self.n_keys >= self.config.max_keys:
                            overflow += 1
                            tenant = split_tenant(ks)[0]
                            ks = (
                                self.overflow_key
                                if tenant == DEFAULT_TENANT
                                else f"{tenant}{TENANT_SEP}{self.overflow_key}"
                            )
                            st = dirty.get(ks) or table.get(ks)
                        if st is None:
                            st = {"p": {}, "b": {}, "r": {}, "s": end}
                            self.n_keys += 1
                    dirty[ks] = st
                panes = st["p"]
                pkey = pane_keys.get(ps)
                if pkey is None:
                    pkey = pane_keys[ps] = str(ps)
                pane = panes.get(pkey)
                if pane is None:
                    pane = panes[pkey] = new_pane()
                panes_cache[(ks, ps)] = pane
                if st["s"] < end:
                    st["s"] = end
            a = s.attributes
            pane[P_CALLS] += 1
            tid = s.trace_id
            if s.status_code == STATUS_ERROR:
                pane[P_ERRORS] += 1
                if len(pane[P_EX_ERR]) < k:
                    pane[P_EX_ERR].append(tid)
            cost = a.get(K_COST)
            if cost is not None:
                if cost.__class__ is not float:
                    cost = _number(cost)
                pane[P_COST] += cost
                ex = pane[P_EX_COST]
                if k and (len(ex) < k or cost > ex[-1][0]):
                    push_top(ex, cost, tid, k)
            tin = a.get(K_IN)
            if tin is not None:
                if tin.__class__ is not int:
                    tin = _number(tin)
                pane[P_IN] += tin
                ex = pane[P_EX_TOK]
                if k and (len(ex) < k or tin > ex[-1][0]):
                    push_top(ex, tin, tid, k)
            tout = a.get(K_OUT)
            if tout is not None:
                pane[P_OUT] += tout if tout.__class__ is int else _number(tout)
            d = end - s.start_ns
            if d > 0:
                bins = pane[P_BINS]
                b = str(ceil(log(d) * inv))
                bins[b] = bins.get(b, 0) + 1
                ex = pane[P_EX_LAT]
                if k and (len(ex) < k or d > ex[-1][0]):
                    push_top(ex, d, tid, k)
            else:
                pane[P_ZEROS] += 1
        if max_end > -(2**63):
            meta["wm"] = max_end
        if closed is None and first_pane is not None:
            meta["closed"] = first_pane
        if late:
            meta["late"] += late
            self._m_late.inc(late)
        if future:
            meta["future"] += future
            self._m_future.inc(future)
        if overflow:
            meta["overflow"] += overflow
            self._m_overflow.inc(overflow)

    # --- closing windows -------------------------------------------------------------

    def watermark_boundary(self) -> int | None:
        """The end of the last pane that may close now, or None before the first span."""
        wm = self.meta["wm"]
        if wm is None:
            return None
        ref = wm
        if self.idle_ns is not None:
            ref = max(ref, int(self.clock() * 1e9) - self.idle_ns)
        t = ref - self.lateness_ns
        return t - t % self.hop_ns

    def _advance(self, dirty: dict[str, Any]) -> None:
        boundary = self.watermark_boundary()
        if boundary is None:
            return
        closed = self.meta["closed"]
        if closed is None or boundary <= closed:
            return
        hop, size = self.hop_ns, self.size_ns
        max_resolve = max((r.resolve_windows for r in self.rules), default=1)
        horizon = self.meta["wm"] if self.meta["wm"] is not None else boundary
        evaluated = 0
        items = self._items(dirty)
        for ks, st in items:
            candidates: set[int] = set()
            for pstart in st["p"]:
                ps = int(pstart)
                # windows containing this pane end in [ps + hop, ps + size]
                first = max(ps + hop, closed + hop)
                last = min(ps + size, boundary)
                if first == last:
                    candidates.add(first)
                elif first < last:
                    candidates.update(range(first, last + 1, hop))
            if any(r[R_ACTIVE] for r in st["r"].values()):
                candidates.update(range(closed + hop, min(boundary, closed + max_resolve * hop) + 1, hop))
            for b_end in sorted(candidates):
                self._evaluate(ks, st, b_end)
                evaluated += 1
            keep_from = boundary - size + hop
            stale = [p for p in st["p"] if int(p) < keep_from]
            for p in stale:
                del st["p"][p]
            if candidates or stale:
                dirty[ks] = st
            if not st["p"] and not any(r[R_ACTIVE] for r in st["r"].values()) and st["s"] < horizon - self.ttl_ns:
                dirty[ks] = None
        self.meta["closed"] = boundary
        self.n_keys = sum(1 for k, _ in items if dirty.get(k, True) is not None)
        self._m_windows.inc(evaluated)
        self._m_keys.set(self.n_keys)

    def _items(self, dirty: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = [(k, v) for k, v in self.table.items() if k != META and k not in dirty]
        out.extend((k, v) for k, v in dirty.items() if v is not None)
        return out

    def _evaluate(self, ks: str, st: dict[str, Any], b_end: int) -> None:
        agg = merge_panes(st["p"], b_end - self.size_ns, b_end) or WindowAggregate(b_end - self.size_ns, b_end)
        values = window_metrics(agg, self.config.window.size, self.mapping, self.wanted)
        rstates: dict[str, list[Any]] = st["r"]
        baselines: dict[str, list[float]] = st["b"]
        anomalous_metrics: set[str] = set()
        for rule in self.rules:
            value = finite(values.get(rule.metric))
            base = baselines.get(rule.metric)
            verdict = judge(rule, value, agg.calls, base, self.config.baseline)
            rs = rstates.get(rule.name)
            if rs is None:
                rs = rstates[rule.name] = [0, 0, 0, None, None]
            if verdict.hit:
                anomalous_metrics.add(rule.metric)
                rs[R_HITS] += 1
                rs[R_OKS] = 0
                if not rs[R_ACTIVE] and rs[R_HITS] >= rule.for_windows:
                    cooldown_ns = round((rule.cooldown if rule.cooldown is not None else self.config.cooldown) * 1e9)
                    if rs[R_LAST_FIRED] is not None and b_end - rs[R_LAST_FIRED] < cooldown_ns:
                        self._m_suppressed.labels(rule.name, "cooldown").inc()
                        continue
                    rs[R_ACTIVE] = 1
                    rs[R_LAST_FIRED] = b_end
                    rs[R_FIRED_AT] = b_end
                    self._send("firing", rule, ks, agg, value, verdict, base, None)
            else:
                rs[R_HITS] = 0
                rs[R_OKS] += 1
                if rs[R_ACTIVE] and rs[R_OKS] >= rule.resolve_windows:
                    rs[R_ACTIVE] = 0
                    self._send("resolved", rule, ks, agg, value, verdict, base, rs[R_FIRED_AT])
            if rs[R_ACTIVE]:
                anomalous_metrics.add(rule.metric)
        bcfg = self.config.baseline
        if agg.calls >= bcfg.min_calls:
            for metric in self.learned:
                if bcfg.freeze_during_alert and metric in anomalous_metrics:
                    continue
                x = finite(values.get(metric))
                if x is not None:
                    baselines[metric] = bl.update(baselines.get(metric), x, self.alpha)

    # --- events ----------------------------------------------------------------------

    def fingerprint(self, rule: str, ks: str) -> str:
        return hashlib.sha1(f"{self.component_id}|{rule}|{ks}".encode()).hexdigest()[:16]

    def _send(
        self,
        state: str,
        rule: RuleConfig,
        ks: str,
        agg: WindowAggregate,
        value: float | None,
        verdict: Verdict,
        base: list[float] | None,
        fired_at: int | None,
    ) -> None:
        n = len(self.config.group_by)
        tenant, dims_key = split_tenant(ks)
        dims = dict(zip(self.config.group_by, (dims_key.split(SEP, n - 1) + [""] * n)[:n], strict=True))
        fp = self.fingerprint(rule.name, ks)
        key_text = " ".join(f"{d}={v or '-'}" for d, v in dims.items())
        baseline = None if base is None else {"mean": base[0], "std": bl.std(base), "windows": int(base[2])}
        change = ""
        if baseline and baseline["mean"] and value is not None:
            change = f" ({(value / baseline['mean'] - 1) * 100:+.0f}% vs baseline {_fmt(baseline['mean'])})"
        verb = "is" if state == "firing" else "back to"
        tag = "RESOLVED" if state == "resolved" else rule.severity.upper()
        summary = (
            f"[{tag}] {rule.name} {state} for {key_text}: {rule.metric} {verb} {_fmt(value)}{change}"
            f", threshold {_fmt(verdict.threshold)} ({rule.kind}), window {_iso(agg.start_ns)}..{_iso(agg.end_ns)}"
        )
        event: dict[str, Any] = {
            "type": EVENT_KIND,
            "id": f"{fp}:{state}:{agg.end_ns}",
            "fingerprint": fp,
            "state": state,
            "processor": self.component_id,
            "rule": rule.name,
            "metric": rule.metric,
            "kind": rule.kind,
            "direction": rule.direction,
            "severity": rule.severity,
            "key": dims,
            "tenant": tenant,
            "window": {
                "start": _iso(agg.start_ns),
                "end": _iso(agg.end_ns),
                "start_ns": agg.start_ns,
                "end_ns": agg.end_ns,
                "size_seconds": self.config.window.size,
            },
            "observed": value,
            "baseline": baseline,
            "threshold": verdict.threshold,
            "rule_threshold": rule.threshold,
            "detail": verdict.detail,
            "calls": agg.calls,
            "example_trace_ids": examples_for(rule.metric, agg, self.k),
            "summary": summary,
            "emitted_at": _iso(int(self.clock() * 1e9)),
        }
        if fired_at is not None:
            event["fired_window_end"] = _iso(fired_at)
        if self._emit is not None:
            self._emit(EVENT_KIND, event)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the API: keys tracked, late/future/overflow spans, watermark."""
        return {"keys": self.n_keys, **{k: self.meta[k] for k in ("late", "future", "overflow", "wm", "closed")}}


def create(component_id: str, config: AnomalyConfig, ctx: ComponentContext) -> AnomalyProcessor:
    return AnomalyProcessor(component_id, config, ctx)


factory = Factory(
    "anomaly",
    AnomalyConfig,
    create,
    "Windowed per-key aggregates, EWMA baselines and alert rules (cost spikes, latency, errors, prompt bloat).",
)
