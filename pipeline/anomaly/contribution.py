"""Pane contributions: what one batch adds to the panes of each anomaly key.

The anomaly processor works in two steps (processors/anomaly.py):
1. `contribute(spans)`, on every worker, per batch: the batch's spans folded into one pane
   per (key, pane start): calls, errors, cost, tokens, latency sketch bins, example traces.
   Everything in a pane adds exactly (windows.py), so contributions from any number of
   batches or workers merge into the same pane.
2. the window evaluator (pipeline/anomaly/evaluator.py) merges contributions into its state,
   closes windows and checks rules. Embedded: in the same call. Distributed: where all
   contributions of a key meet, the worker owning the key's partition of the panes topic
   (pipeline/worker/anomaly_panes.py), so a key is evaluated once, whatever the worker count.

A contribution travels as JSON: `{"proc", "batch", "src", "n", "end", "panes": {key: {pane
start: pane}}}` (`src`: the span-topic partition it came from, `n`: how many there are, `end`:
the newest span end time of the batch, for the watermark).

Redelivery never double counts: `dedup_mark(batch_id)` names a batch as (stream, sequence):
a Kafka batch `topic/partition/first-last` is ("topic/partition", last) — one partition's
batches are cut and run in offset order, so a (key, pane) that merged up to `last` of a stream
already has every batch ending at or before it; any other id (derived from content,
pipeline/batch_ids.py) is its own stream, merged once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from pipeline import semconv
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
    Pane,
    new_pane,
    push_top,
)
from pipeline.spans import STATUS_ERROR, Span, SpanBatch

K_COST = semconv.GEN_AI_COST_USD
K_IN = semconv.GEN_AI_INPUT_TOKENS
K_OUT = semconv.GEN_AI_OUTPUT_TOKENS

# {key: {pane start ns: pane}}
Panes = dict[str, dict[int, Pane]]


class PaneExchange(Protocol):
    """Carries contributions to where their keys are evaluated (the distributed worker)."""

    def register(self, processor: Any) -> None: ...

    def publish(self, processor_id: str, batch: SpanBatch, panes: Panes, max_end: int | None) -> None: ...


def _number(value: Any) -> float:
    if value is None or value.__class__ is bool:
        return 0.0
    if value.__class__ in (int, float):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def contribute(
    spans: list[Span], key_of: Callable[[Span], str], hop_ns: int, k: int, inv_log_gamma: float, future_limit: int,
    existing: Callable[[str, int], Pane | None] | None = None,
) -> tuple[Panes, int | None, int]:
    """(panes per key, newest end time, spans from the future): the per-span hot path.

    `existing(key, pane start)`: the state's own open pane of that key, to fold spans into it in
    place (the embedded runtime, where contribution and evaluation share one process); panes it
    does not have (new, late, overflow) are returned for `WindowEvaluator.merge` as usual."""
    out: Panes = {}
    cache: dict[tuple[str, int], Pane] = {}
    log = math.log
    ceil = math.ceil
    max_end: int | None = None
    future = 0
    for s in spans:
        end = s.end_ns
        if end > future_limit:
            future += 1
            continue
        if max_end is None or end > max_end:
            max_end = end
        ps = end - end % hop_ns
        ks = key_of(s)
        pane = cache.get((ks, ps))
        if pane is None:
            pane = existing(ks, ps) if existing is not None else None
            if pane is None:
                pane = new_pane()
                out.setdefault(ks, {})[ps] = pane
            cache[(ks, ps)] = pane
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
            b = str(ceil(log(d) * inv_log_gamma))
            bins[b] = bins.get(b, 0) + 1
            ex = pane[P_EX_LAT]
            if k and (len(ex) < k or d > ex[-1][0]):
                push_top(ex, d, tid, k)
        else:
            pane[P_ZEROS] += 1
    return out, max_end, future


def merge_pane(dst: Pane, src: Pane, k: int) -> None:
    """Add pane `src` into `dst` (examples: the k highest of both, errors: the first k)."""
    dst[P_CALLS] += src[P_CALLS]
    dst[P_ERRORS] += src[P_ERRORS]
    dst[P_COST] += src[P_COST]
    dst[P_IN] += src[P_IN]
    dst[P_OUT] += src[P_OUT]
    dst[P_ZEROS] += src[P_ZEROS]
    bins = dst[P_BINS]
    for b, n in src[P_BINS].items():
        bins[b] = bins.get(b, 0) + n
    for i in (P_EX_COST, P_EX_LAT, P_EX_TOK):
        if src[i]:
            dst[i] = sorted([*dst[i], *src[i]], reverse=True)[:k]
    errs = dst[P_EX_ERR]
    for tid in src[P_EX_ERR]:
        if len(errs) >= k:
            break
        errs.append(tid)


def partition_of(key: str, partitions: int) -> int:
    """The panes-topic partition of an anomaly key (stable across processes, unlike hash())."""
    return zlib.crc32(key.encode()) % partitions


def dedup_mark(batch_id: str) -> tuple[str, int]:
    """(stream, sequence) of a batch id; see the module doc."""
    head, sep, rng = batch_id.rpartition("/")
    if sep:
        first, dash, last = rng.partition("-")
        if dash and first.isdigit() and last.isdigit():
            return head, int(last)
    return batch_id, 0
