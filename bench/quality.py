"""Throughput of the quality processor and of its embedding model (all-MiniLM-L6-v2, CPU torch).

1. The model alone: embeddings/s for one text per call (what a pool job does) and 32 per call.
2. The processor on GenAI spans (200 prompts; `--changed` of answers differ from the baseline, the
   rest repeat it): the hot path (process() per span, CPU seconds of the calling thread) with
   scoring off (sample_rate 0: fingerprints + exact match only) and at the default sample rate;
   and the sustained rate with scoring on, end to end (wall time until the pool scored every
   queued answer; the pool has 1 thread = the second core), plus answers not scored (queue full).
Figures are from a shared machine: compare the ratios within one run.

    python -m bench.quality [--spans 20000] [--changed 0.3] [--sample-rate 0.1]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import threading
import time
from pathlib import Path

from pipeline.component import ComponentContext
from pipeline.quality.embedder import Embedder
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.quality import QualityConfig, QualityProcessor

WORDS = (
    "order refund shipping account password invoice plan team billing upgrade support delivery "
    "region latency model prompt answer customer ticket export import report dashboard alert"
).split()
BATCH = 1000


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_spans(n: int, changed: float, seed: int = 1) -> list[Span]:
    rng = random.Random(seed)
    prompts = [_text(rng, 30) for _ in range(200)]
    answers = [_text(rng, 40) for _ in range(200)]
    res = Resource({"service.name": "bench"})
    out = []
    for i in range(n):
        q = rng.randrange(200)
        answer = _text(rng, 40) if rng.random() < changed else answers[q]
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 60,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompts[q]}]}]),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
            ),
        }
        out.append(Span(f"{rng.getrandbits(128):032x}", f"{i:016x}", "chat", i, i + 1, attributes=attrs, resource=res))
    return out


def bench_model(e: Embedder, rng: random.Random) -> dict[str, float]:
    texts = [_text(rng, 40) for _ in range(256)]
    e.embed(texts[:4])
    t = time.perf_counter()
    for s in texts[:64]:
        e.embed([s])
    single = 64 / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, 256, 32):
        e.embed(texts[i : i + 32])
    batched = 256 / (time.perf_counter() - t)
    return {"embeddings_per_s_batch1": single, "embeddings_per_s_batch32": batched}


def run_processor(e: Embedder, spans: list[Span], rate: float) -> dict[str, float]:
    ctx = ComponentContext("bench", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("bench"))
    cfg = QualityConfig(sample_rate=rate)
    p = QualityProcessor("bench", cfg, ctx, embedder=e)
    # fresh copies: the processor writes attributes onto the spans
    batches = [
        SpanBatch(
            [
                Span(
                    s.trace_id,
                    s.span_id,
                    s.name,
                    s.start_ns,
                    s.end_ns,
                    attributes=dict(s.attributes),
                    resource=s.resource,
                )
                for s in spans[i : i + BATCH]
            ],
            f"b{i}",
        )
        for i in range(0, len(spans), BATCH)
    ]
    wall = time.perf_counter()
    cpu = time.thread_time()
    for b in batches:
        p.process(b)
    cpu = time.thread_time() - cpu
    p.wait_idle(600)
    p.process(SpanBatch([], "idle"))
    wall = time.perf_counter() - wall
    reg = ctx.telemetry.registry
    scored = reg.get_sample_value("tracepipe_quality_scores_total", {"processor": "bench", "outcome": "scored"})
    full = reg.get_sample_value("tracepipe_quality_scores_total", {"processor": "bench", "outcome": "queue_full"})
    p.close()
    return {
        "hot_path_spans_per_cpu_s": len(spans) / cpu,
        "end_to_end_spans_per_s": len(spans) / wall,
        "scored": scored or 0.0,
        "not_scored_queue_full": full or 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=20000)
    ap.add_argument("--changed", type=float, default=0.3)
    ap.add_argument("--sample-rate", type=float, default=QualityConfig().sample_rate)
    args = ap.parse_args()
    e = Embedder(threads=1)
    t = time.perf_counter()
    e.load()
    print(f"model load: {time.perf_counter() - t:.1f} s")
    for k, v in bench_model(e, random.Random(2)).items():
        print(f"model {k}: {v:,.0f}")
    spans = make_spans(args.spans, args.changed)
    off = run_processor(e, spans, 0.0)
    on = run_processor(e, spans, args.sample_rate)
    print(f"processor, {args.spans} spans, {args.changed:.0%} changed answers, threads: {threading.active_count()}")
    print(f"  scoring off (sample_rate 0): hot path {off['hot_path_spans_per_cpu_s']:,.0f} spans/CPU-s")
    print(
        f"  scoring on (sample_rate {args.sample_rate}): hot path {on['hot_path_spans_per_cpu_s']:,.0f} spans/CPU-s, "
        f"end to end {on['end_to_end_spans_per_s']:,.0f} spans/s until all scored; "
        f"scored {on['scored']:.0f}, not scored (queue full) {on['not_scored_queue_full']:.0f}"
    )
    print(f"  ratio hot path on/off: {on['hot_path_spans_per_cpu_s'] / off['hot_path_spans_per_cpu_s']:.2f}")


if __name__ == "__main__":
    main()
