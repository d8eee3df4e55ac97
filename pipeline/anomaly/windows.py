"""Panes and windows: per-key aggregates over event time, as plain JSON data.

A pane aggregates the spans of one key whose end time falls in one hop
[start, start + hop). A window of `size` is the merge of size/hop consecutive panes
(tumbling windows: one pane). Every part merges exactly (counts and sums add, latency
sketches add bucket counts, example lists keep the top values), so panes from several
batches, workers or restarts combine into the same window.

Pane layout (a list, to keep state small): see the P_* indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.anomaly.sketch import SketchMapping, merge_into, quantiles

P_CALLS = 0
P_ERRORS = 1
P_COST = 2
P_IN = 3
P_OUT = 4
P_ZEROS = 5  # spans with zero duration
P_BINS = 6  # latency sketch {bucket: count} over duration in ns
P_EX_COST = 7  # [[cost, trace_id], ...] highest first
P_EX_LAT = 8  # [[duration_ns, trace_id], ...]
P_EX_TOK = 9  # [[input_tokens, trace_id], ...]
P_EX_ERR = 10  # [trace_id, ...] first errors

Pane = list[Any]


def new_pane() -> Pane:
    return [0, 0, 0.0, 0, 0, 0, {}, [], [], [], []]


def push_top(examples: list[list[Any]], value: float, trace_id: str, k: int) -> None:
    """Keep the k highest [value, trace id] pairs, highest first (the ingest hot path)."""
    if len(examples) < k:
        examples.append([value, trace_id])
    elif value > examples[-1][0]:
        examples[-1] = [value, trace_id]
    else:
        return
    examples.sort(reverse=True)


def top_traces(lists: list[list[list[Any]]], k: int) -> list[str]:
    """The trace ids of the k highest values over several example lists, each trace once."""
    merged = sorted((item for lst in lists for item in lst), key=lambda e: e[0], reverse=True)
    out: list[str] = []
    for _, tid in merged:
        if tid not in out:
            out.append(tid)
            if len(out) == k:
                break
    return out


@dataclass
class WindowAggregate:
    """The merged panes of one key over one window (examples are merged on demand)."""

    start_ns: int
    end_ns: int
    calls: int = 0
    errors: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    zeros: int = 0
    bins: dict[str, int] = field(default_factory=dict)
    panes: list[Pane] = field(default_factory=list)

    def add_pane(self, pane: Pane) -> None:
        self.calls += pane[P_CALLS]
        self.errors += pane[P_ERRORS]
        self.cost += pane[P_COST]
        self.input_tokens += pane[P_IN]
        self.output_tokens += pane[P_OUT]
        self.zeros += pane[P_ZEROS]
        if not self.panes:
            self.bins = pane[P_BINS]  # read-only until a second pane arrives
        else:
            if len(self.panes) == 1:
                self.bins = dict(self.bins)
            merge_into(self.bins, pane[P_BINS])
        self.panes.append(pane)


def merge_panes(panes: dict[str, Pane], start_ns: int, end_ns: int) -> WindowAggregate | None:
    """The window [start_ns, end_ns) of one key, or None when no pane falls in it."""
    agg: WindowAggregate | None = None
    for pstart, pane in panes.items():
        ps = int(pstart)
        if start_ns <= ps < end_ns:
            if agg is None:
                agg = WindowAggregate(start_ns, end_ns)
            agg.add_pane(pane)
    return agg


_QUANTILE_METRICS = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


def window_metrics(
    agg: WindowAggregate, window_seconds: float, mapping: SketchMapping, wanted: frozenset[str]
) -> dict[str, float | None]:
    """The values of the `wanted` metrics; None where undefined (no calls)."""
    calls = agg.calls
    out: dict[str, float | None] = {
        "calls": float(calls),
        "errors": float(agg.errors),
        "cost": agg.cost,
        "cost_per_hour": agg.cost * 3600.0 / window_seconds,
        "input_tokens": float(agg.input_tokens),
        "output_tokens": float(agg.output_tokens),
        "tokens": float(agg.input_tokens + agg.output_tokens),
        "error_rate": agg.errors / calls if calls else None,
        "tokens_per_call": (agg.input_tokens + agg.output_tokens) / calls if calls else None,
        "input_tokens_per_call": agg.input_tokens / calls if calls else None,
        "output_tokens_per_call": agg.output_tokens / calls if calls else None,
    }
    qs = [(m, q) for m, q in _QUANTILE_METRICS.items() if m in wanted]
    if qs:
        values = quantiles(agg.bins, agg.zeros, mapping, tuple(q for _, q in qs))
        for (m, _), v in zip(qs, values, strict=True):
            out[m] = None if v is None else v / 1e6
    return out


def examples_for(metric: str, agg: WindowAggregate, k: int) -> list[str]:
    """Trace ids that drove a metric: costliest, slowest, biggest prompts, or errors."""
    if metric in ("errors", "error_rate"):
        out: list[str] = []
        for pane in agg.panes:
            for tid in pane[P_EX_ERR]:
                if tid not in out and len(out) < k:
                    out.append(tid)
        return out
    if metric.startswith("latency"):
        return top_traces([p[P_EX_LAT] for p in agg.panes], k)
    if "tokens" in metric:
        return top_traces([p[P_EX_TOK] for p in agg.panes], k)
    return top_traces([p[P_EX_COST] for p in agg.panes], k) or top_traces([p[P_EX_LAT] for p in agg.panes], k)


def finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) or math.isinf(x) else x
