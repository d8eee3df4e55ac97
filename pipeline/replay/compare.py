"""Replay against original, per item and in total.

`judge(pairs)` scores each replayed answer against the original once, when the run is recorded:
exact match (equal after the quality processor's normalising: case and whitespace) and semantic
similarity in [0, 1] with the quality processor's local MiniLM model (pipeline/quality/embedder.py;
None when the model is not installed or either answer is empty). `comparison(items, results)`
builds the rows `tracepipe replay compare` prints and GET /api/replay/sets/NAME/compare answers.
Deltas are replay minus original; a cost is None when its model has no price, and a total then
counts only the items priced on both sides (`priced_items`).
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.quality.embedder import Embedder, EmbedderUnavailable, similarity
from pipeline.quality.fingerprint import normalise

log = logging.getLogger("tracepipe.replay")


def judge(pairs: list[tuple[str, str | None]], embedder: Any = None) -> list[tuple[bool | None, float | None]]:
    """(exact match, similarity) per (original, replay) answer; a failed call (replay None) gets (None, None)."""
    exact: list[bool | None] = [None if r is None else normalise(o) == normalise(r) for o, r in pairs]
    sims: list[float | None] = [None] * len(pairs)
    todo = [i for i, (o, r) in enumerate(pairs) if r and o]
    if todo:
        try:
            model = embedder or Embedder()
            vectors = model.embed([t for i in todo for t in pairs[i]])  # type: ignore[misc]
            for k, i in enumerate(todo):
                sims[i] = round(similarity(vectors[2 * k], vectors[2 * k + 1]), 4)
        except (ImportError, EmbedderUnavailable) as e:
            log.warning("no semantic similarity: %s", e)
    for i, (_, r) in enumerate(pairs):
        if r is not None and exact[i] and sims[i] is None:
            sims[i] = 1.0  # equal answers, even where no model runs
    return list(zip(exact, sims, strict=True))


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def comparison(set_name: str, run: dict[str, Any], items: list[dict[str, Any]],
               results: list[dict[str, Any]]) -> dict[str, Any]:
    by_item = {r["item"]: r for r in results}
    rows = []
    for it in items:
        r = by_item.get(it["item"])
        if r is None:
            continue
        ok = r["error"] is None
        replay_cost = r["cost_usd"] if ok else None
        rows.append({
            "item": it["item"],
            "original_trace_id": it["trace_id"],
            "replay_trace_id": r["trace_id"],
            "original_model": it["model"],
            "replay_model": r["response_model"] or r["model"],
            "original_cost_usd": it["cost_usd"],
            "replay_cost_usd": replay_cost,
            "cost_delta_usd": _delta(it["cost_usd"], replay_cost),
            "original_latency_ms": it["duration_ns"] / 1e6,
            "replay_latency_ms": r["duration_ns"] / 1e6 if ok else None,
            "latency_delta_ms": (r["duration_ns"] - it["duration_ns"]) / 1e6 if ok else None,
            "original_input_tokens": it["input_tokens"],
            "original_output_tokens": it["output_tokens"],
            "replay_input_tokens": r["input_tokens"] if ok else None,
            "replay_output_tokens": r["output_tokens"] if ok else None,
            "exact_match": r["exact_match"],
            "similarity": r["similarity"],
            "error": r["error"],
        })
    done = [x for x in rows if x["error"] is None]
    priced = [x for x in done if x["cost_delta_usd"] is not None]
    original_cost = sum(x["original_cost_usd"] for x in priced)
    replay_cost = sum(x["replay_cost_usd"] for x in priced)
    sims = [x["similarity"] for x in done if x["similarity"] is not None]
    totals = {
        "items": len(rows),
        "errors": len(rows) - len(done),
        "priced_items": len(priced),
        "original_cost_usd": original_cost,
        "replay_cost_usd": replay_cost,
        "cost_delta_usd": replay_cost - original_cost,
        "cost_delta_pct": (replay_cost - original_cost) / original_cost * 100 if original_cost else None,
        "original_latency_ms_mean": _mean([x["original_latency_ms"] for x in done]),
        "replay_latency_ms_mean": _mean([x["replay_latency_ms"] for x in done]),
        "original_input_tokens": sum(x["original_input_tokens"] for x in done),
        "original_output_tokens": sum(x["original_output_tokens"] for x in done),
        "replay_input_tokens": sum(x["replay_input_tokens"] for x in done),
        "replay_output_tokens": sum(x["replay_output_tokens"] for x in done),
        "exact_matches": sum(1 for x in done if x["exact_match"]),
        "similarity_mean": _mean(sims),
        "similarity_min": min(sims) if sims else None,
    }
    return {"set": set_name, "run": run, "items": rows, "totals": totals}
