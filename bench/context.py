"""What the context processor's per-trace wait costs: throughput and memory.

Traces of 3 spans (root with the accounting ids -> agent step -> LLM call with GenAI
attributes), in batches of 1000 spans. Two arrival patterns:
- `same batch`: a trace's spans arrive together with its root (released at once);
- `root next batch`: children arrive one batch before their root (held for one batch, the
  common SDK pattern where the root ends last).
The chain normalize -> cost runs with and without `context` in the same run; rates are
spans per CPU-second of this process (time.process_time), so the ratio is what to read:
absolute figures depend on the (shared) machine.

Memory (tracemalloc): bytes per buffered trace while its 2 children wait for the root
(spans included, and the buffer alone), and per remembered released trace (late spans).

`--end-to-end N`: also the whole embedded path, `tracepipe run` (OTLP/HTTP -> chain -> chDB)
with the default config (normalize, context, cost) and with the same config without
`context`, N spans each (bench/workload.py traffic: whole traces per request), spans stored
per CPU-second of the pipeline process, and the ratio.

    python -m bench.context [--traces 20000] [--repeat 3] [--end-to-end 60000]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
import tracemalloc
from pathlib import Path

from pipeline.component import ComponentContext
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.context import ContextConfig, ContextProcessor
from processors.cost import CostConfig, CostProcessor
from processors.normalize import NormalizeConfig, NormalizeProcessor

BATCH = 1000


def ctx() -> ComponentContext:
    return ComponentContext("bench", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("bench"))


def make_traces(n: int, seed: int = 1) -> list[list[Span]]:
    rng = random.Random(seed)
    resource = Resource({"service.name": "ask-app", "deployment.environment": "prod", "host.name": "ip-10-0-3-7"})
    out = []
    for i in range(n):
        tid = f"{rng.getrandbits(128):032x}"
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(3)]
        root = Span(tid, ids[0], "POST /ask", 0, 3_000_000, kind=2, resource=resource, attributes={
            "http.request.method": "POST", "http.route": "/ask", "user.id": f"u-{i % 5000}",
            "customer.id": f"c-{i % 300}", "app.feature": "ask", "session.id": f"s-{i % 8000}", "user.tier": "pro",
        })  # fmt: skip
        step = Span(tid, ids[1], "agent.step", 100, 2_900_000, parent_span_id=ids[0], resource=resource,
                    attributes={"agent.step": "retrieve", "retrieval.documents": 4})
        llm = Span(tid, ids[2], "chat gpt-4o-mini", 200, 2_800_000, parent_span_id=ids[1], kind=3, resource=resource,
                   attributes={
            "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": rng.randrange(100, 4000), "gen_ai.usage.output_tokens": rng.randrange(10, 800),
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}", "gen_ai.request.temperature": 0.2,
            "gen_ai.response.finish_reasons": ["stop"], "server.address": "api.openai.com",
        })  # fmt: skip
        out.append([llm, step, root])
    return out


def batches(traces: list[list[Span]], pattern: str) -> list[SpanBatch]:
    """Batches of BATCH spans; `root next batch` puts each root in the batch after its children."""
    per = BATCH // 3
    out: list[SpanBatch] = []
    carry: list[Span] = []
    for bi in range(0, len(traces), per):
        group = traces[bi:bi + per]
        if pattern == "same batch":
            spans = [s for t in group for s in t]
        else:
            spans = carry + [s for t in group for s in t[:2]]
            carry = [t[2] for t in group]
        out.append(SpanBatch(spans, f"b{len(out)}"))
    if carry:
        out.append(SpanBatch(carry, f"b{len(out)}"))
    return out


def run_chain(procs: list, todo: list[SpanBatch]) -> tuple[int, float]:
    n = 0
    t0 = time.process_time()
    for b in todo:
        for p in procs:
            b = p.process(b)
        n += len(b.spans)
    for p in procs:
        n += len(p.flush())
    return n, time.process_time() - t0


def chain(with_context: bool) -> list:
    c = ctx()
    procs = [NormalizeProcessor("normalize", NormalizeConfig(), c)]
    if with_context:
        procs.append(ContextProcessor("context", ContextConfig(), c))
    procs.append(CostProcessor("cost", CostConfig(), c))
    return procs


def throughput(n_traces: int, repeat: int) -> None:
    print(f"chain normalize -> [context] -> cost, {n_traces} traces x 3 spans, batches of {BATCH}, best of {repeat}")
    for pattern in ("same batch", "root next batch"):
        best: dict[bool, float] = {}
        for _ in range(repeat):
            for with_context in (False, True):
                todo = batches(make_traces(n_traces), pattern)
                n, secs = run_chain(chain(with_context), todo)
                assert n == 3 * n_traces, n
                best[with_context] = max(best.get(with_context, 0.0), n / secs)
        added_us = (1 / best[True] - 1 / best[False]) * 1e6
        print(f"  {pattern:16s} without context {best[False]:9.0f} spans/s   with context {best[True]:9.0f} spans/s"
              f"   ratio {best[True] / best[False]:.2f}   (+{added_us:.2f} us per span)")
    for pattern in ("same batch", "root next batch"):
        rate = 0.0
        for _ in range(repeat):
            todo = batches(make_traces(n_traces), pattern)
            n, secs = run_chain([ContextProcessor("context", ContextConfig(), ctx())], todo)
            rate = max(rate, n / secs)
        print(f"  context alone ({pattern}): {rate:9.0f} spans/s")


def memory(n_traces: int) -> None:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    traces = make_traces(n_traces, seed=2)
    roots = SpanBatch([t[2] for t in traces], "roots")
    with_roots = tracemalloc.get_traced_memory()[0]
    children = [SpanBatch([s for t in traces[i:i + BATCH // 2] for s in t[:2]], f"m{i}")
                for i in range(0, n_traces, BATCH // 2)]
    with_spans = tracemalloc.get_traced_memory()[0]
    del traces
    proc = ContextProcessor("context", ContextConfig(max_traces=10 * n_traces, max_spans=10 * n_traces), ctx())
    for b in children:
        proc.process(b)
    del children
    held = tracemalloc.get_traced_memory()[0]
    assert proc.held_traces == n_traces
    out = proc.process(roots)
    assert len(out.spans) == 3 * n_traces and proc.held_traces == 0
    del out, roots
    remembered = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    span_bytes = (with_roots - base) / n_traces * 2 / 3  # the 2 held spans of a 3-span trace
    buffer_bytes = (held - with_spans) / n_traces
    print(f"memory, {n_traces} traces held (2 children each, waiting for the root):")
    print(f"  per buffered trace: {span_bytes + buffer_bytes:7.0f} B including its spans "
          f"(spans {span_bytes:.0f} B, buffer {buffer_bytes:.0f} B)")
    # traces still reference the spans: what stays is the remembered context (released-trace LRU)
    print(f"  per remembered released trace (context for late spans, LRU `remember_traces`): "
          f"{(remembered - base) / n_traces:7.0f} B (spans gone)")


def end_to_end(n_spans: int) -> None:
    import asyncio
    import tempfile

    import yaml

    from bench.throughput import TRACES_PER_REQUEST, throughput
    from bench.workload import make_request, spans_in
    from tests.pipeline_proc import start_pipeline

    n_requests = max(1, n_spans // (TRACES_PER_REQUEST * 3))
    reqs = [make_request(TRACES_PER_REQUEST, seed=i) for i in range(n_requests)]
    bodies = [r.SerializeToString() for r in reqs]
    total = sum(spans_in(r) for r in reqs)
    default = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipeline" / "default.yaml").read_text())
    without = yaml.safe_load(yaml.safe_dump(default))
    without["processors"].pop("context")
    without["service"]["pipelines"]["traces"]["processors"].remove("context")
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in (("without context", without), ("with context", default)):
            path = Path(tmp) / f"{name.replace(' ', '-')}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            p = start_pipeline(Path(tmp) / name.replace(" ", "-"), "-c", str(path))
            try:
                r = asyncio.run(throughput(p, bodies, total))
            finally:
                p.stop()
            rates[name] = r["per_core"]
            print(f"  tracepipe run {name:16s} {r['per_core']:9.0f} spans/s per core ({r['cpu_s']:.1f} CPU s)")
    print(f"  end-to-end ratio with/without context: {rates['with context'] / rates['without context']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--end-to-end", type=int, default=0, metavar="SPANS",
                    help="also run `tracepipe run` with and without context over this many spans")
    args = ap.parse_args()
    throughput(args.traces, args.repeat)
    memory(args.traces)
    if args.end_to_end:
        print(f"whole embedded path, {args.end_to_end} spans:")
        end_to_end(args.end_to_end)


if __name__ == "__main__":
    main()
