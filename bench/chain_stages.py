"""CPU per span of each stage of the shipped embedded chain, in one process, without HTTP.

The workload of bench/compare_collectors.py (requests of 99 spans, prompts of 300 bytes) goes
through the default config's chain in batches of `--batch-requests` requests, stage by stage:
protobuf parse, decode (OTLP -> Span), each processor, each sink. Python stages are timed
with the calling thread's CPU clock (`time.thread_time`), so chDB's background merges do not
land on them; the clickhouse sink is split into the Arrow build (thread CPU) and the insert
(process CPU: chDB inserts on its own threads, and merges of earlier parts that run meanwhile
count there too). Batches of `--batch-requests` requests match what `tracepipe run` takes off
its queue under load (the `batches` line of bench/throughput.py).

    python bench/chain_stages.py [--spans 30000] [--batch-requests 30] [--rounds 3]

Prints the best round per stage (us/span and share) and the implied spans per CPU-second of
these stages together; the whole process (receiver, write-ahead log, /metrics) adds to that.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request
from pipeline.builder import build_chain
from pipeline.config import Overrides, load_config
from pipeline.gc_tuning import tune_gc
from pipeline.otlp.decode import decode_request
from pipeline.runtime_support import build_services
from pipeline.spans import SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from sinks.clickhouse import ClickHouseSink, spans_to_arrow


async def one_round(bodies: list[bytes], batch_requests: int, data_dir: Path) -> tuple[dict[str, float], int]:
    """Seconds per stage over every batch, and the spans that went through."""
    cfg = load_config(None, Overrides(data_dir=str(data_dir)))
    telemetry = Telemetry()
    services = await build_services(cfg, telemetry)
    chain = build_chain(cfg, telemetry, state=MemoryStateStore(), services=services)
    await chain.start()
    tune_gc()  # as `tracepipe run` does once started
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any], clock: Callable[[], float] = time.thread_time) -> Any:
        t0 = clock()
        out = fn()
        seconds[name] = seconds.get(name, 0.0) + clock() - t0
        return out

    n_spans = 0
    try:
        for lo in range(0, len(bodies), batch_requests):
            chunk = bodies[lo : lo + batch_requests]
            reqs = timed("protobuf parse", lambda c=chunk: [ExportTraceServiceRequest.FromString(b) for b in c])
            spans = timed("decode", lambda r=reqs: [s for q in r for s in decode_request(q)])
            n_spans += len(spans)
            batch = SpanBatch(spans, f"bench-{lo}")
            for pipe in chain.pipelines:
                for proc in pipe.processors:
                    batch = timed(f"processor {proc.component_id}", lambda p=proc, b=batch: p.process(b))
            for sid, sink in chain.sinks.items():
                if isinstance(sink, ClickHouseSink):
                    table = timed(f"sink {sid}: Arrow build", lambda b=batch: spans_to_arrow(b.spans))
                    timed(f"sink {sid}: chDB insert", lambda s=sink, t=table, i=lo: s._insert(t, f"bench-{i}"),
                          time.process_time)
                else:
                    t0 = time.thread_time()
                    await sink.write(batch)
                    seconds[f"sink {sid}"] = seconds.get(f"sink {sid}", 0.0) + time.thread_time() - t0
    finally:
        await chain.close()
    return seconds, n_spans


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=30_000)
    ap.add_argument("--batch-requests", type=int, default=30, help="requests of 99 spans per batch")
    ap.add_argument("--prompt-bytes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="fresh chain and chDB directory per round; best kept")
    args = ap.parse_args()
    bodies = [make_request(33, seed=i, prompt_bytes=args.prompt_bytes).SerializeToString()
              for i in range(max(1, args.spans // 99))]
    best: dict[str, float] = {}
    n_spans = 0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, n_spans = asyncio.run(one_round(bodies, args.batch_requests, Path(tmp)))
        for k, v in seconds.items():
            best[k] = min(best.get(k, v), v)
    total = sum(best.values())
    print(f"{n_spans} spans in batches of {args.batch_requests * 99} spans; best of {args.rounds} rounds")
    for k, v in best.items():
        print(f"stage  {k:<32} {v * 1e6 / n_spans:6.1f} us/span  {100 * v / total:5.1f} %")
    print(f"total  {total * 1e6 / n_spans:.1f} us/span = {n_spans / total:,.0f} spans per CPU-second (these stages)")


if __name__ == "__main__":
    main()
