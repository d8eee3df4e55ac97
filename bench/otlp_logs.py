"""OTLP logs ingestion in `tracepipe run`: log records/s stored (redacted) in otel_logs, beside
spans/s through the span path, measured in the same run on the same process.

Each log record is a GenAI event like openai-v2's (`gen_ai.user.message`, a ~1 KB map body
with a planted secret that the redact processor masks); requests carry 512 records (the SDK's
default log export batch), sent by 4 concurrent clients over OTLP/HTTP protobuf. Figures are
records (or spans) per CPU-second of the pipeline process and per wall second; on a shared
machine read the ratio, not the absolute figures.

    python bench/otlp_logs.py [--records 60000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import cpu_seconds
from bench.workload import make_request, spans_in
from tests.pipeline_proc import start_pipeline
from tests.test_otlp_logs_metrics import logs_request

CONFIG = """
receivers: {otlp: {}}
processors:
  normalize: {}
  cost: {}
  redact: {custom_rules: [{id: planted, regex: "SECRET-[0-9]{6}"}]}
sinks: {clickhouse: {}}
service: {pipelines: {traces: {processors: [normalize, cost, redact], sinks: [clickhouse]}}}
"""
PER_REQUEST = 512
CLIENTS = 4


async def send_all(url: str, bodies: list[bytes]) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            for _ in range(1000):  # retry 429s, as an SDK does
                async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
                    if r.status == 200:
                        break
                    assert r.status in (429, 503), r.status
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))


def measure(p, path: str, bodies: list[bytes], items: int, done) -> tuple[float, float]:
    cpu0, t0 = cpu_seconds(p.proc.pid), time.perf_counter()
    asyncio.run(send_all(f"{p.otlp_http}{path}", bodies))
    while not done():
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(p.proc.pid) - cpu0
    return items / cpu, items / wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=60_000)
    args = ap.parse_args()
    n_req = max(1, args.records // PER_REQUEST)
    prompt = "Summarize our refund policy for annual plans, SECRET-123456, in two sentences. " * 12
    log_bodies = [logs_request(i + 1, 1, prompt, n=PER_REQUEST).SerializeToString() for i in range(n_req)]
    span_reqs = [make_request(170, seed=i) for i in range(max(1, args.records // 510))]
    n_spans = sum(spans_in(r) for r in span_reqs)
    span_bodies = [r.SerializeToString() for r in span_reqs]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(CONFIG)
        p = start_pipeline(Path(tmp) / "data", "--config", str(cfg))
        try:
            def metric(name: str) -> float:
                for line in p.metrics().splitlines():
                    if line.startswith(name + "{") or line.startswith(name + " "):
                        return float(line.rsplit(" ", 1)[1])
                return 0.0

            logs_cpu, logs_wall = measure(p, "/v1/logs", log_bodies, n_req * PER_REQUEST, lambda: True)
            stored_before = metric("tracepipe_sink_sent_spans_total")
            spans_cpu, spans_wall = measure(
                p, "/v1/traces", span_bodies, n_spans,
                lambda: metric("tracepipe_sink_sent_spans_total") - stored_before >= n_spans)
        finally:
            p.stop()
    print(f"log records: {n_req * PER_REQUEST} in {n_req} requests of {PER_REQUEST} (~1 KB body, redacted)")
    print(f"  logs  -> otel_logs : {logs_cpu:10,.0f} records/CPU-s   {logs_wall:10,.0f} records/s wall")
    print(f"  spans -> otel_traces: {spans_cpu:10,.0f} spans/CPU-s     {spans_wall:10,.0f} spans/s wall")
    print(f"  ratio logs/spans per CPU-second: {logs_cpu / spans_cpu:.2f}  (cores: {os.cpu_count()}, shared machine)")


if __name__ == "__main__":
    main()
