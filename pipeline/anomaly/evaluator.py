"""The window evaluator: merges pane contributions into per-key state, closes windows by
the watermark, learns baselines and checks the rules.

One evaluator owns one scope of keys in a state table:
- embedded (`partition=None`): every key, meta under `__meta__`; the watermark is the newest
  span end time merged (as the processor always did);
- distributed (`partition=q` of `partitions`): the keys whose panes-topic partition is q
  (contribution.partition_of), meta under `__meta__/q`. The watermark is the oldest of the
  newest end times per span-topic partition (every partition must have reported): a window
  closes only when every source is past it, so the same contributions make the same windows
  with 1 or 12 workers, however far one worker runs ahead of another. A partition whose owner
  has read all there is (reported idle) holds nothing back until it brings spans again; when
  every partition is idle the newest end time counts. Nothing is late before
  that watermark exists: the first window starts at the earliest pane merged by then.

In both, `idle_close` lets the wall clock close windows when no newer span arrived, and each
(key, pane) keeps the dedup marks (contribution.dedup_mark) of what it merged, so a
redelivered contribution is ignored (distributed only; embedded batches run once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.anomaly import baseline as bl
from pipeline.anomaly.config import AnomalyConfig, RuleConfig
from pipeline.anomaly.contribution import Panes, merge_pane, partition_of
from pipeline.anomaly.events import EVENT_KIND, alert_event, fingerprint, fmt, iso, summary
from pipeline.anomaly.rules import Verdict, judge
from pipeline.anomaly.sketch import SketchMapping
from pipeline.anomaly.windows import P_CALLS, Pane, WindowAggregate, examples_for, finite, merge_panes, window_metrics
from pipeline.telemetry import Telemetry
from pipeline.tenants import DEFAULT_TENANT

META = "__meta__"
SEP = "\x1f"
TENANT_SEP = "\x1e"  # never in a tenant name (see sinks/clickhouse.py's rule) nor produced by key_function
PART_SEP = "\x1d"  # distributed: the overflow key of one partition is `<overflow key>\x1d<partition>`
MAX_MARKS = 512  # dedup marks kept per (key, pane): offset streams need one per span partition

# rule state: [active, hit_streak, ok_streak, last_fired_window_end_ns, firing_window_end_ns]
R_ACTIVE, R_HITS, R_OKS, R_LAST_FIRED, R_FIRED_AT = range(5)

EventSink = Callable[[str, dict[str, Any]], None]


def split_tenant(ks: str) -> tuple[str, str]:
    """A state key as (tenant, key of the dimensions)."""
    tenant, sep, rest = ks.partition(TENANT_SEP)
    return (tenant, rest) if sep else (DEFAULT_TENANT, ks)


class WindowEvaluator:
    def __init__(
        self,
        component_id: str,
        config: AnomalyConfig,
        table: Any,
        telemetry: Telemetry,
        *,
        clock: Callable[[], float] | None = None,
        emit: EventSink | None = None,
        partition: int | None = None,
        partitions: int = 1,
    ) -> None:
        self.component_id = component_id
        self.config = config
        self.table = table
        self.clock = clock or time.time
        self._emit = emit
        self.partition = partition
        self.partitions = partitions
        self.meta_key = META if partition is None else f"{META}/{partition}"
        self.hop_ns = round(config.window.hop_seconds * 1e9)
        self.size_ns = round(config.window.size * 1e9)
        self.lateness_ns = round(config.allowed_lateness * 1e9)
        self.idle_ns = None if config.idle_close is None else round(config.idle_close * 1e9)
        self.ttl_ns = round(config.key_ttl * 1e9)
        self.mapping = SketchMapping(config.relative_accuracy)
        self.alpha = bl.alpha_for(config.baseline.horizon, config.window.hop_seconds)
        self.k = config.example_traces
        self.rules: list[RuleConfig] = list(config.rules)
        self.wanted = frozenset(r.metric for r in self.rules)
        self.learned = sorted({r.metric for r in self.rules if r.kind != "absolute"})
        self.overflow_key = SEP.join(["other"] * len(config.group_by))
        self.max_keys = config.max_keys if partition is None else math.ceil(config.max_keys / partitions)
        self.meta: dict[str, Any] = {"wm": None, "closed": None, "late": 0, "future": 0, "overflow": 0}
        if partition is not None:
            self.meta.update({"src": {}, "n": partitions})
        self.n_keys = 0
        self._loaded = False  # state is read at first use: a Faust table is recovered after construction
        t = telemetry
        self._m_late = t.anomaly_unwindowed_spans.labels(component_id, "late")
        self._m_overflow = t.anomaly_unwindowed_spans.labels(component_id, "key_overflow")
        self._m_keys = t.anomaly_keys.labels(component_id)
        self._m_windows = t.anomaly_windows_evaluated.labels(component_id)
        self._m_suppressed = t.anomaly_alerts_suppressed

    # --- state -----------------------------------------------------------------------

    def _owns(self, ks: str) -> bool:
        if ks.startswith(META):
            return False
        if self.partition is None:
            return True
        base, sep, part = ks.partition(PART_SEP)
        return int(part) == self.partition if sep else partition_of(base, self.partitions) == self.partition

    def load(self) -> None:
        if self._loaded:
            return
        meta = self.table.get(self.meta_key)
        if meta:
            self.meta.update(meta)
        self.n_keys = sum(1 for k in self.table if self._owns(k))
        self._m_keys.set(self.n_keys)
        self._loaded = True

    def write(self, dirty: dict[str, Any]) -> None:
        """Write the touched keys and the meta back (one assignment each: a Faust changelog write)."""
        table = self.table
        for ks, st in dirty.items():
            if st is None:
                table.pop(ks, None)
            else:
                table[ks] = st
        table[self.meta_key] = dict(self.meta)
        dirty.clear()

    # --- merging contributions -------------------------------------------------------

    def open_pane_of(self, dirty: dict[str, Any]) -> Callable[[str, int], Pane | None]:
        """For `contribute(existing=...)` in one process: the open pane (key, start) already in the
        state, marked dirty, or None (a new key or pane, a closed pane: left to `merge`)."""
        self.load()
        table = self.table
        closed = self.meta["closed"]

        def existing(ks: str, ps: int) -> Pane | None:
            if closed is not None and ps < closed:
                return None
            st = dirty.get(ks)
            if st is None:
                st = table.get(ks)
                if st is None:
                    return None
            pane = st["p"].get(str(ps))
            if pane is not None:
                dirty[ks] = st
            return pane

        return existing

    def merge(self, panes: Panes, max_end: int | None, dirty: dict[str, Any], *, mark: tuple[str, int] | None = None,
              source: int | None = None) -> None:
        """Merge one batch's contribution (`mark`: its dedup mark; `source`: its span partition)."""
        self.load()
        meta = self.meta
        closed = meta["closed"]
        distributed = self.partition is not None
        if max_end is not None:
            if meta["wm"] is None or max_end > meta["wm"]:
                meta["wm"] = max_end
            if source is not None:
                src = meta["src"]
                s = str(source)
                if s not in src or max_end > src[s]:
                    src[s] = max_end
                if s in meta.get("idle", ()):
                    meta["idle"] = [i for i in meta["idle"] if i != s]
        late = overflow = 0
        first_pane = None
        table = self.table
        k = self.k
        for ks, by_start in panes.items():
            st = None
            folded = False
            for ps, pane in by_start.items():
                ps = int(ps)
                if closed is not None and ps < closed:
                    late += pane[P_CALLS]
                    continue
                if not distributed and closed is None and (first_pane is None or ps < first_pane):
                    first_pane = ps
                if st is None:
                    st = dirty.get(ks) or table.get(ks)
                    if st is None:
                        if self.n_keys >= self.max_keys:
                            folded = True
                            ks = self._overflow_key_of(ks)
                            st = dirty.get(ks) or table.get(ks)
                        if st is None:
                            st = {"p": {}, "b": {}, "r": {}, "s": ps}
                            self.n_keys += 1
                    dirty[ks] = st
                if folded:
                    overflow += pane[P_CALLS]
                pkey = str(ps)
                if mark is not None:
                    marks = st.setdefault("d", {}).setdefault(pkey, {})
                    seen = marks.get(mark[0])
                    if seen is not None and mark[1] <= seen:
                        continue  # this (key, pane) merged that batch already: a redelivery
                    marks[mark[0]] = mark[1]
                    if len(marks) > MAX_MARKS:
                        del marks[next(iter(marks))]
                mine = st["p"].get(pkey)
                if mine is None:
                    st["p"][pkey] = pane  # a contribution is built for one merge: its panes are taken over
                else:
                    merge_pane(mine, pane, k)
                if st["s"] < ps:
                    st["s"] = ps
        if closed is None and first_pane is not None:
            meta["closed"] = first_pane
        if late:
            meta["late"] += late
            self._m_late.inc(late)
        if overflow:
            meta["overflow"] += overflow
            self._m_overflow.inc(overflow)

    def _overflow_key_of(self, ks: str) -> str:
        tenant = split_tenant(ks)[0]
        key = self.overflow_key if tenant == DEFAULT_TENANT else f"{tenant}{TENANT_SEP}{self.overflow_key}"
        return key if self.partition is None else f"{key}{PART_SEP}{self.partition}"

    # --- closing windows -------------------------------------------------------------

    def event_watermark(self) -> int | None:
        """The event time every source is past (embedded: the newest end time), or None."""
        if self.partition is None:
            return self.meta["wm"]
        src, idle = self.meta["src"], set(self.meta.get("idle", ()))
        if len(set(src) | idle) < self.meta["n"]:
            return None  # a source not heard of yet may still bring older spans
        busy = [end for s, end in src.items() if s not in idle]
        if busy:
            return min(busy)
        return max(src.values()) if src else None  # every source caught up: all is in

    def mark_idle(self, sources: list[int]) -> None:
        """Span partitions whose owner read all there is: they hold no watermark back until new spans come."""
        self.load()
        self.meta["idle"] = sorted({str(s) for s in sources})

    def watermark_boundary(self) -> int | None:
        """The end of the last pane that may close now, or None before the first span."""
        if self.meta["wm"] is None:
            return None
        ref = self.event_watermark()
        if self.idle_ns is not None:
            idle_ref = int(self.clock() * 1e9) - self.idle_ns
            ref = idle_ref if ref is None else max(ref, idle_ref)
        if ref is None:
            return None
        t = ref - self.lateness_ns
        return t - t % self.hop_ns

    def advance(self, dirty: dict[str, Any]) -> None:
        self.load()
        boundary = self.watermark_boundary()
        if boundary is None:
            return
        closed = self.meta["closed"]
        items: list[tuple[str, dict[str, Any]]] | None = None
        if closed is None:  # distributed: windows start at the earliest pane merged before the watermark existed
            items = self._items(dirty)
            starts = [int(p) for _, st in items for p in st["p"]]
            if not starts:
                return
            closed = self.meta["closed"] = min(starts)
        if boundary <= closed:
            return
        hop, size = self.hop_ns, self.size_ns
        max_resolve = max((r.resolve_windows for r in self.rules), default=1)
        horizon = self.meta["wm"] if self.meta["wm"] is not None else boundary
        evaluated = 0
        if items is None:
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
                if "d" in st:
                    st["d"].pop(p, None)
            if candidates or stale:
                dirty[ks] = st
            if not st["p"] and not any(r[R_ACTIVE] for r in st["r"].values()) and st["s"] < horizon - self.ttl_ns:
                dirty[ks] = None
        self.meta["closed"] = boundary
        self.n_keys = sum(1 for k, _ in items if dirty.get(k, True) is not None)
        self._m_windows.inc(evaluated)
        self._m_keys.set(self.n_keys)

    def _items(self, dirty: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        owns = self._owns
        out = [(k, v) for k, v in self.table.items() if k not in dirty and owns(k)]
        out.extend((k, v) for k, v in dirty.items() if v is not None)
        return out

    def keys(self) -> Iterable[str]:
        return (k for k in self.table if self._owns(k))
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
        return fingerprint(self.component_id, rule, ks)

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
        tenant, dims_key = split_tenant(ks.partition(PART_SEP)[0])
        dims = dict(zip(self.config.group_by, (dims_key.split(SEP, n - 1) + [""] * n)[:n], strict=True))
        baseline = None if base is None else {"mean": base[0], "std": bl.std(base), "windows": int(base[2])}
        change = ""
        if baseline and baseline["mean"] and value is not None:
            change = f" ({(value / baseline['mean'] - 1) * 100:+.0f}% vs baseline {fmt(baseline['mean'])})"
        start, end = iso(agg.start_ns), iso(agg.end_ns)
        event = alert_event(
            state,
            rule,
            processor=self.component_id,
            fingerprint=self.fingerprint(rule.name, ks),
            at=agg.end_ns,
            key=dims,
            tenant=tenant,
            window={
                "start": start,
                "end": end,
                "start_ns": agg.start_ns,
                "end_ns": agg.end_ns,
                "size_seconds": self.config.window.size,
            },
            observed=value,
            baseline=baseline,
            threshold=verdict.threshold,
            detail=verdict.detail,
            calls=agg.calls,
            example_trace_ids=examples_for(rule.metric, agg, self.k),
            summary=summary(state, rule, dims, fmt(value) + change, verdict.threshold, f"window {start}..{end}"),
            emitted_at=iso(int(self.clock() * 1e9)),
        )
        if fired_at is not None:
            event["fired_window_end"] = iso(fired_at)
        if self._emit is not None:
            self._emit(EVENT_KIND, event)

    def stats(self) -> dict[str, Any]:
        """Counters for tests and the API: keys tracked, late/future/overflow spans, watermark."""
        return {"keys": self.n_keys, **{k: self.meta[k] for k in ("late", "future", "overflow", "wm", "closed")}}
