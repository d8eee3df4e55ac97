"""chDB insert throughput of the clickhouse sink's write path vs raw insert_arrow.

    python -m bench.chdb_insert [--spans 120000] [--batch 10000] [--prompt-bytes 2000]

Each figure comes from its own subprocess with a fresh chDB directory (one engine per
process, no merges of another variant's data in the way), in spans/s of wall clock and
spans per CPU-second of the whole process (chDB's threads included):
- arrow build:        sinks.clickhouse.spans_to_arrow alone (the per-span Python part);
- sink write path:    ClickHouseSink.write (Arrow build + insert_arrow with dedup token) into
                      the spans table feeding the trace-summary materialized view, one batch
                      at a time; "2 in flight" as the embedded runtime writes (encoding of one
                      batch overlaps the insert of the other);
- raw insert_arrow:   the same Arrow tables, prebuilt, inserted directly (same tables and view);
- raw, no view:       prebuilt tables into the spans table alone;
- raw, no view/index: the same without the attribute-map bloom-filter indexes
                      (`attribute_indexes: false`).
Spans come from bench/workload.py (RAG-shaped traces of 3 spans, 10 attributes each)
decoded by the real OTLP decoder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "build": "arrow build",
    "sink": "sink write path",
    "sink2": "sink, 2 in flight",
    "raw": "raw insert_arrow",
    "raw_noview": "raw, no view",
    "raw_noindex": "raw, no view/index",
}


def _spans(n_spans: int, prompt_bytes: int) -> list:
    from bench.workload import make_request
    from pipeline.otlp.decode import decode_request

    n_traces = max(1, n_spans // 3)
    spans: list = []
    for i in range(0, n_traces, 1000):
        spans += decode_request(make_request(min(1000, n_traces - i), seed=i + 1, prompt_bytes=prompt_bytes))
    return spans


async def _run_variant(variant: str, spans: list, batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one variant over `spans`."""
    from pipeline.query.store import open_client
    from pipeline.spans import SpanBatch
    from sinks.clickhouse import schema_statements, spans_to_arrow
    from tests.trace_samples import started_sink

    batches = [spans[i : i + batch] for i in range(0, len(spans), batch)]
    dsn = "chdb://" + str(Path(tempfile.mkdtemp(prefix="chdb-bench-")).resolve())
    if variant in ("sink", "sink2"):
        sink = await started_sink(dsn, "bench", ttl_days=None)
        slots = asyncio.Semaphore(2 if variant == "sink2" else 1)

        async def write(i: int, b: list) -> None:
            async with slots:
                await sink.write(SpanBatch(b, f"bench-{i}"))

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(write(i, b) for i, b in enumerate(batches)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = sink._client.query("SELECT count() FROM bench.otel_traces").result_rows[0][0]
        await sink.close()
        assert stored == len(spans), (stored, len(spans))
        return wall, cpu
    wall, cpu = time.perf_counter(), time.process_time()
    tables = [spans_to_arrow(b) for b in batches]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if variant == "build":
        return wall, cpu
    client = open_client(dsn)
    stmts = schema_statements("bench", "otel_traces", None, attribute_indexes=variant != "raw_noindex")
    for stmt in stmts if variant == "raw" else stmts[:2]:
        client.command(stmt)
    wall, cpu = time.perf_counter(), time.process_time()
    for table in tables:
        client.insert_arrow("bench.otel_traces", table)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    client.close()
    return wall, cpu


def measure_variant(variant: str, n_spans: int, batch: int, prompt_bytes: int) -> dict[str, float]:
    """One variant in its own process: {"n", "wall", "cpu", "rss_mb"}; RuntimeError (with the end of
    its stderr) when the process fails."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.chdb_insert", "--variant", variant, "--spans", str(n_spans),
         "--batch", str(batch), "--prompt-bytes", str(prompt_bytes)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=120_000)
    ap.add_argument("--batch", type=int, default=10_000, help="spans per sink write / insert")
    ap.add_argument("--prompt-bytes", type=int, default=2000, help="size of the prompt attribute of LLM spans")
    ap.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.variant:  # child: one measurement, as JSON
        spans = _spans(args.spans, args.prompt_bytes)
        wall, cpu = asyncio.run(_run_variant(args.variant, spans, args.batch))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"n": len(spans), "wall": wall, "cpu": cpu, "rss_mb": rss}))
        return

    print(f"~{args.spans} spans, batches of {args.batch}, prompt {args.prompt_bytes} B; one process per figure")
    results = {}
    for variant, label in VARIANTS.items():
        try:
            r = measure_variant(variant, args.spans, args.batch, args.prompt_bytes)
        except RuntimeError as e:
            print(f"{label}: failed\n{e}", file=sys.stderr)
            continue
        results[variant] = r
        print(
            f"{label:<20} {r['n'] / r['wall']:>9,.0f} spans/s wall {r['n'] / r['cpu']:>9,.0f} spans/CPU-s"
            f"   peak RSS {r['rss_mb']:,.0f} MB"
        )
    if "sink" in results and "raw" in results:
        s, r = results["sink"], results["raw"]
        print(
            f"sink path vs raw insert_arrow: {s['wall'] / r['wall']:.2f}x the wall time, "
            f"{s['cpu'] / r['cpu']:.2f}x the CPU"
        )


if __name__ == "__main__":
    main()
