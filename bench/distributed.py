"""Distributed path vs embedded path, in one run, on the same workload.

- embedded: `tracepipe run` (OTLP/HTTP -> queue -> chain -> chDB), spans/s per core of its process;
- distributed: `tracepipe receiver` (OTLP/HTTP -> split by trace -> Kafka, acks=all) and
  `tracepipe worker` (Kafka -> chain -> chDB, Faust) against a local Tansu broker, each
  measured in spans/s per core of its own process (CPU seconds from /proc), plus the
  end-to-end wall rate. The broker's own CPU is reported separately.

    python bench/distributed.py [--spans 100000] [--compression none|gzip]

Tansu needs the idempotent producer off; production settings otherwise (linger 5 ms,
1 MB batches).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import TRACES_PER_REQUEST, cpu_seconds, post_all, rss_mb
from bench.workload import make_request, spans_in
from tests.distributed_helpers import RoleProcess, role_env, start_role, write_config
from tests.pipeline_proc import PipelineProcess, start_pipeline
from tests.services.kafka import start_local_kafka

# Scraping /metrics costs the scraped process real CPU (tens of ms per scrape with the LLM
# series), so completion is polled twice a second, the same for both paths.
POLL = 0.5


async def _stored(session: aiohttp.ClientSession, w: RoleProcess | PipelineProcess) -> float:
    async with session.get(f"http://127.0.0.1:{w.metrics_port}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith('tracepipe_sink_sent_spans_total{sink="clickhouse"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def distributed(receiver: RoleProcess, worker: RoleProcess, broker_pid: int, bodies: list[bytes],
                      n_spans: int, concurrency: int = 4) -> dict[str, float]:
    url = f"{receiver.otlp_http}/v1/traces"
    async with aiohttp.ClientSession() as session:
        base = await _stored(session, worker)
        cpu_r0, cpu_w0, cpu_b0 = (cpu_seconds(p) for p in (receiver.proc.pid, worker.proc.pid, broker_pid))
        t0 = time.perf_counter()
        retries = await post_all(session, url, bodies, concurrency)
        accepted = time.perf_counter() - t0
        cpu_r = cpu_seconds(receiver.proc.pid) - cpu_r0
        while await _stored(session, worker) - base < n_spans:
            await asyncio.sleep(POLL)
        wall = time.perf_counter() - t0
        cpu_w = cpu_seconds(worker.proc.pid) - cpu_w0
        cpu_b = cpu_seconds(broker_pid) - cpu_b0
    return {"receiver_per_core": n_spans / cpu_r, "receiver_cpu": cpu_r, "accept_wall": n_spans / accepted,
            "worker_per_core": n_spans / cpu_w, "worker_cpu": cpu_w, "e2e_wall": n_spans / wall,
            "broker_cpu": cpu_b, "retries": retries}


async def embedded(p: PipelineProcess, bodies: list[bytes], n_spans: int, concurrency: int = 4) -> dict[str, float]:
    url = f"{p.otlp_http}/v1/traces"
    async with aiohttp.ClientSession() as session:
        base = await _stored(session, p)
        cpu0 = cpu_seconds(p.proc.pid)
        t0 = time.perf_counter()
        await post_all(session, url, bodies, concurrency)
        while await _stored(session, p) - base < n_spans:
            await asyncio.sleep(POLL)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(p.proc.pid) - cpu0
    return {"per_core": n_spans / cpu, "cpu_s": cpu, "per_wall": n_spans / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--compression", default="none", choices=["none", "gzip"])
    ap.add_argument("--batch-messages", type=int, default=5000, help="transport.kafka.max_batch_messages")
    args = ap.parse_args()

    n_requests = max(1, args.spans // (TRACES_PER_REQUEST * 3))
    reqs = [make_request(TRACES_PER_REQUEST, seed=i) for i in range(n_requests)]
    bodies = [r.SerializeToString() for r in reqs]
    n_spans = sum(spans_in(r) for r in reqs)
    print(f"workload: {n_spans} spans in {len(bodies)} requests of {TRACES_PER_REQUEST * 3} spans "
          f"({TRACES_PER_REQUEST} traces each, packed into one Kafka message per partition), "
          f"{sum(map(len, bodies)) / n_spans:.0f} bytes/span")

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        p = start_pipeline(tmp / "embedded")
        try:
            e = asyncio.run(embedded(p, bodies, n_spans))
        finally:
            p.stop()
        print(f"embedded     OTLP/HTTP -> queue -> chain -> chDB   {e['per_core']:>9,.0f} spans/s per core "
              f"({e['cpu_s']:.1f} CPU s), {e['per_wall']:,.0f} spans/s wall")

        broker = start_local_kafka()
        cfg = write_config(tmp, topic="bench_spans", group="bench-workers", partitions=4, kafka={
            "compression": args.compression, "linger_ms": 5, "max_batch_bytes": 1024 * 1024,
            "produce_timeout": 30.0, "max_batch_messages": args.batch_messages})
        env = role_env(broker.url, chdb_dir=tmp / "ch", data_dir=tmp / "data")
        worker = start_role("worker", cfg, env, tmp / "worker.log")
        receiver = start_role("receiver", cfg, env, tmp / "receiver.log")
        try:
            assert broker.process is not None
            d = asyncio.run(distributed(receiver, worker, broker.process.pid, bodies, n_spans))
            print(f"distributed  receiver OTLP/HTTP -> Kafka (acks) {d['receiver_per_core']:>9,.0f} spans/s per core "
                  f"({d['receiver_cpu']:.1f} CPU s), accepted at {d['accept_wall']:,.0f} spans/s wall, "
                  f"{d['retries']} retried requests")
            print(f"distributed  worker Kafka -> chain -> chDB         {d['worker_per_core']:>9,.0f} spans/s per core "
                  f"({d['worker_cpu']:.1f} CPU s)")
            print(f"distributed  end to end (2 cores, 1 of each)       {d['e2e_wall']:>9,.0f} spans/s wall; "
                  f"broker used {d['broker_cpu']:.1f} CPU s")
            print(f"memory       receiver peak RSS {rss_mb(receiver.proc.pid):.0f} MB, "
                  f"worker peak RSS {rss_mb(worker.proc.pid):.0f} MB")
        finally:
            receiver.stop()
            worker.stop()
            broker.stop()
    print(f"ratio        worker per core / embedded per core = {d['worker_per_core'] / e['per_core']:.2f}; "
          f"receiver per core / embedded per core = {d['receiver_per_core'] / e['per_core']:.2f}")


if __name__ == "__main__":
    main()
