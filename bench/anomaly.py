"""The anomaly processor: spans/s with 10,000 distinct keys, and the memory its state takes.

Builds a stream of GenAI spans spread over `--keys` keys (service x model x feature),
`--minutes` of event time, then times `AnomalyProcessor.process` over batches of
`--batch` spans (the wall clock follows the stream, so windows close and rules run as
they would live). Prints spans/s (one core: the processor is synchronous), the time
spent closing windows, and memory: the state table measured with tracemalloc (allocated
while processing, still held at the end) and the process RSS growth.

Also prints the false-alert rate of the default rules over the steady stream.

    python bench/anomaly.py [--keys 10000] [--spans 600000] [--minutes 30] [--batch 2000] [--size 5m] [--hop 1m]

CPU time is the figure to read on a shared machine (wall time includes other processes).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.anomaly.config import AnomalyConfig
from pipeline.spans import STATUS_ERROR, STATUS_OK, Resource, Span, SpanBatch
from processors.anomaly import AnomalyProcessor
from tests.anomaly_streams import NS, T0, Collected, ManualClock, context


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def build_stream(keys: int, n_spans: int, minutes: int, seed: int = 1) -> list[Span]:
    rng = random.Random(seed)
    services = [f"svc-{i}" for i in range(max(1, keys // 100))]
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro", "o3"]
    features = [f"feature-{i}" for i in range(20)]
    combos = []
    for s in services:
        for m in models:
            for f in features:
                combos.append((s, m, f))
                if len(combos) == keys:
                    break
            if len(combos) == keys:
                break
        if len(combos) == keys:
            break
    resources = {s: Resource({"service.name": s}) for s in services}
    span_ns = minutes * 60 * NS
    ends = sorted(T0 + int(rng.random() * span_ns) for _ in range(n_spans))
    out = []
    for i, end in enumerate(ends):
        s, m, f = combos[i % len(combos)]
        dur = int(rng.lognormvariate(0, 0.4) * 800e6)
        tin = int(rng.gammavariate(4.0, 150.0)) + 1
        out.append(Span(
            f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}", "chat", end - dur, end, kind=3,
            resource=resources[s], status_code=STATUS_ERROR if rng.random() < 0.01 else STATUS_OK,
            attributes={"gen_ai.request.model": m, "gen_ai.operation.name": "chat", "app.feature": f,
                        "gen_ai.usage.input_tokens": tin, "gen_ai.usage.output_tokens": 120,
                        "gen_ai.usage.cost_usd": tin * 2.5e-6 + 120 * 1e-5},
        ))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--spans", type=int, default=600_000)
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--size", default="5m", help="window size (the processor's default: 5m)")
    ap.add_argument("--hop", default=None, help="window hop (default: tumbling)")
    args = ap.parse_args()

    print(f"building {args.spans} spans over {args.keys} keys and {args.minutes} min of event time ...")
    spans = build_stream(args.keys, args.spans, args.minutes)
    batches = [SpanBatch(spans[i:i + args.batch], f"b{i}") for i in range(0, len(spans), args.batch)]
    gc.collect()
    # The pre-built stream is far larger than what a live pipeline holds at once (its queue):
    # keep the cyclic GC from rescanning it on every collection, so the figure is the processor's.
    gc.freeze()

    window = {"size": args.size, **({"hop": args.hop} if args.hop else {})}
    cfg = AnomalyConfig.model_validate({"group_by": ["service", "model", "feature"], "window": window,
                                        "max_keys": args.keys * 2})
    clock = ManualClock()
    events = Collected()
    rss0 = rss_bytes()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    proc = AnomalyProcessor("anomaly", cfg, context(), clock=clock, on_event=events)
    close_time = 0.0
    advance = proc.evaluator.advance

    def timed_advance(dirty):  # type: ignore[no-untyped-def]
        nonlocal close_time
        t = time.perf_counter()
        advance(dirty)
        close_time += time.perf_counter() - t

    proc.evaluator.advance = timed_advance  # type: ignore[method-assign]
    tracemalloc.stop()  # do not slow the timed run; state allocations are compared below

    t0 = time.perf_counter()
    c0 = time.process_time()
    for b in batches:
        clock.now = b.spans[-1].end_ns / NS
        proc.process(b)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss1 = rss_bytes()

    # memory of the state: rebuild it under tracemalloc (same stream, untimed)
    gc.collect()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    proc2 = AnomalyProcessor("anomaly", cfg, context(), clock=clock, on_event=Collected())
    for b in batches:
        clock.now = b.spans[-1].end_ns / NS
        proc2.process(b)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))

    n = len(spans)
    windows = proc.ctx.telemetry.anomaly_windows_evaluated.labels("anomaly")._value.get()
    print(f"window {args.size}{' hop ' + args.hop if args.hop else ' tumbling'}, rules: "
          f"{', '.join(r.name for r in cfg.rules)}; batches of {args.batch}")
    print(f"keys tracked:            {proc.stats()['keys']}")
    print(f"spans/s per core (CPU):  {n / cpu:,.0f}   ({cpu * 1e6 / n:.2f} us/span; wall {n / wall:,.0f}/s)")
    print(f"spans per key and window: {n / max(windows, 1):.1f}")
    print(f"closing windows:         {close_time:.2f} s of {wall:.2f} s ({windows:,.0f} key-windows evaluated, "
          f"{close_time / max(windows, 1) * 1e6:.1f} us each)")
    print(f"state memory (tracemalloc, held after the run): {held / 2**20:.1f} MiB "
          f"({held / max(proc.stats()['keys'], 1):,.0f} B/key)")
    print(f"RSS growth during the run: {(rss1 - rss0) / 2**20:.1f} MiB (RSS now {rss1 / 2**20:.0f} MiB)")
    checks = windows * len(cfg.rules)
    print(f"alerts on this steady stream: {len(events.of('firing'))} firing in {checks:,.0f} rule checks "
          f"(false-alert rate {len(events.of('firing')) / max(checks, 1):.2e})")


if __name__ == "__main__":
    main()
