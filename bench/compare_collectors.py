"""tracepipe beside a native OpenTelemetry collector, measured in one run on one workload.

Targets, each sent the same OTLP/HTTP protobuf requests (100 spans per request by default, ten
attributes per span, a short prompt and completion on the LLM spans), each measured in spans per
CPU-second of its own process (utime + stime from /proc, from the first request until the target
is done):

- `tracepipe run` (the shipped embedded default chain -> chDB): done when every span is stored;
- `tracepipe receiver` -> Kafka (Tansu, acks=all): done when every request was answered, which
  happens only after Kafka acknowledged it;
- Rotel (PyPI `rotel`, a Rust OTel collector) -> Kafka (acks=all, gzip): Rotel answers before
  Kafka confirms, so it is done when its CPU stops moving;
- Rotel -> blackhole: decode and acknowledge only;
- the chDB sink-path floor: the clickhouse sink's write path alone (Arrow build + insert into the
  same tables and view) on the same spans decoded once, in batches of `--floor-batch`, in its own
  process (bench/chdb_insert.py, variant "sink"): what the embedded path could reach if decode,
  processors, HTTP and the queue cost nothing.

    python -m pip install -e '.[bench]'      # rotel
    python bench/compare_collectors.py [--spans 60000] [--spans-per-request 100] [--floor-batch 10000]
                                       [--rounds 1] [--only NAME ...]

Prints each figure and the ratios the performance issue asks for. Runs of the same code on a shared
2-core machine differ by a quarter: `--rounds N` runs every target N times in turn and prints the
median and range of each figure and of each ratio (taken within a round). The Tansu broker's own CPU is
not counted for either Kafka target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chdb_insert import measure_variant
from bench.throughput import cpu_seconds, post_all, rss_mb, sent_spans
from bench.workload import make_request, spans_in
from tests.distributed_helpers import role_env, start_role, write_config
from tests.pipeline_proc import start_pipeline
from tests.services import free_port, wait_for_port
from tests.services.kafka import start_local_kafka

TOPIC = "bench_collectors"
CONCURRENCY = 4
QUIET = 1.0  # seconds without CPU use that mean a fire-and-forget target is done


@dataclass
class Figure:
    name: str
    spans: int
    cpu_s: float
    wall_s: float
    rss_mb: float

    @property
    def per_core(self) -> float:
        return self.spans / self.cpu_s if self.cpu_s > 0 else float("inf")


def rotel_binary() -> str:
    try:
        import rotel  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit("rotel is not installed: python -m pip install -e '.[bench]'") from None
    binary = Path(rotel.__file__).with_name("rotel-agent")
    if not binary.exists():
        raise SystemExit(f"the rotel package has no agent binary at {binary}")
    return str(binary)


async def wait_cpu_quiet(pid: int, quiet: float = QUIET, limit: float = 120.0) -> None:
    """Return once `pid` used no CPU for `quiet` seconds (bounded by `limit`)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = cpu_seconds(pid)
        if now > last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return


async def measure(name: str, pid: int, url: str, bodies: list[bytes], n_spans: int,
                  done: Callable[[aiohttp.ClientSession], object] | None) -> Figure:
    async with aiohttp.ClientSession() as session:
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        await post_all(session, url, bodies, CONCURRENCY)
        if done is not None:
            await done(session)  # type: ignore[misc]
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0
    return Figure(name, n_spans, cpu, wall, rss_mb(pid))


def start_rotel(binary: str, workdir: Path, exporter_args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    http_port, grpc_port = free_port(), free_port()
    log = open(workdir / f"rotel-{http_port}.log", "wb")  # noqa: SIM115 - kept open for the process's life
    proc = subprocess.Popen(
        [binary, "start", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--pid-file", str(workdir / f"rotel-{http_port}.pid"),
         "--traces-batch-max-size", "1000", *exporter_args],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        wait_for_port("127.0.0.1", http_port, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, http_port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def create_topic(bootstrap: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def run_embedded(tmp: Path, bodies: list[bytes], n_spans: int) -> Figure:
    p = start_pipeline(tmp / "embedded")
    try:
        async def stored(session: aiohttp.ClientSession) -> None:
            while await sent_spans(session, p) < n_spans:  # a fresh data directory: counts start at 0
                await asyncio.sleep(0.5)

        return asyncio.run(measure("tracepipe run (default chain -> chDB)", p.proc.pid,
                                   f"{p.otlp_http}/v1/traces", bodies, n_spans, stored))
    finally:
        p.stop()


def run_receiver(tmp: Path, bootstrap: str, bodies: list[bytes], n_spans: int) -> Figure:
    # the shipped producer settings: the tests' one record per batch works around Tansu's end offsets
    # for consumers, and nothing consumes here (it would make each message its own gzip'd batch)
    cfg = write_config(tmp, topic=TOPIC, group="bench-collectors", partitions=4,
                       kafka={"compression": "gzip", "linger_ms": 5, "max_batch_bytes": 1024 * 1024,
                              "produce_timeout": 30.0})
    env = role_env(bootstrap, chdb_dir=tmp / "ch", data_dir=tmp / "data")
    receiver = start_role("receiver", cfg, env, tmp / "receiver.log")
    try:
        return asyncio.run(measure("tracepipe receiver -> Kafka (acks all, gzip)", receiver.proc.pid,
                                   f"{receiver.otlp_http}/v1/traces", bodies, n_spans, None))
    finally:
        receiver.stop()


def run_rotel(tmp: Path, binary: str, name: str, exporter_args: list[str], bodies: list[bytes], n_spans: int) -> Figure:
    proc, port = start_rotel(binary, tmp, exporter_args)
    try:
        async def quiet(_session: aiohttp.ClientSession) -> None:
            await wait_cpu_quiet(proc.pid)

        fig = asyncio.run(measure(name, proc.pid, f"http://127.0.0.1:{port}/v1/traces", bodies, n_spans, quiet))
        fig.wall_s = max(fig.wall_s - QUIET, 1e-9)  # the quiet wait is not work
        return fig
    finally:
        stop(proc)


def run_chdb_floor(n_spans: int, prompt_bytes: int, batch: int) -> Figure:
    """The clickhouse sink's write path alone, in its own process (bench/chdb_insert.py)."""
    try:
        r = measure_variant("sink", n_spans, batch, prompt_bytes)
    except RuntimeError as e:
        raise SystemExit(f"chDB floor failed:\n{e}") from None
    return Figure(f"chDB sink-path floor (batches of {batch})", r["n"], r["cpu"], r["wall"], r["rss_mb"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=60_000, help="spans sent to each target")
    ap.add_argument("--spans-per-request", type=int, default=100)
    ap.add_argument("--prompt-bytes", type=int, default=300, help="size of each prompt and completion")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every target this many times, in turn, and print the median and range")
    ap.add_argument("--floor-batch", type=int, default=10_000, help="spans per sink write of the chDB floor")
    targets = ["embedded", "chdb-floor", "receiver", "rotel-kafka", "rotel-blackhole"]
    ap.add_argument("--only", nargs="*", choices=targets, help="run only these targets")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    wanted = set(args.only or targets)
    rotel = rotel_binary() if wanted & {"rotel-kafka", "rotel-blackhole"} else ""  # fail before any run

    traces_per_request = max(1, round(args.spans_per_request / 3))
    n_requests = max(1, args.spans // (traces_per_request * 3))
    reqs = [make_request(traces_per_request, seed=i, prompt_bytes=args.prompt_bytes) for i in range(n_requests)]
    bodies = [r.SerializeToString() for r in reqs]
    n_spans = sum(spans_in(r) for r in reqs)
    print(f"workload: {n_spans} spans in {len(bodies)} OTLP/HTTP protobuf requests of {traces_per_request * 3} "
          f"spans, {sum(map(len, bodies)) / n_spans:.0f} bytes/span, {CONCURRENCY} concurrent senders; "
          f"{os.cpu_count()} cores on this machine")

    rounds: list[dict[str, Figure]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        for i in range(args.rounds):
            tmp = Path(tmp_s) / f"round-{i + 1}"
            tmp.mkdir()
            rounds.append(run_round(tmp, wanted, rotel, bodies, n_spans, args.prompt_bytes, args.floor_batch))
            print_round(rounds[-1], f"round {i + 1} of {args.rounds}" if args.rounds > 1 else "")
    if args.rounds > 1:
        print_summary(rounds)


def run_round(tmp: Path, wanted: set[str], rotel: str, bodies: list[bytes], n_spans: int, prompt_bytes: int,
              floor_batch: int) -> dict[str, Figure]:
    """Every wanted target once, in the order of the table."""
    figures: dict[str, Figure] = {}
    if "embedded" in wanted:
        figures["embedded"] = run_embedded(tmp, bodies, n_spans)
    if "chdb-floor" in wanted:
        figures["chdb-floor"] = run_chdb_floor(n_spans, prompt_bytes, floor_batch)
    if wanted & {"receiver", "rotel-kafka"}:
        broker = start_local_kafka()
        try:
            asyncio.run(create_topic(broker.url, 4))
            if "receiver" in wanted:
                figures["receiver"] = run_receiver(tmp, broker.url, bodies, n_spans)
            if "rotel-kafka" in wanted:
                figures["rotel-kafka"] = run_rotel(tmp, rotel, "Rotel -> Kafka (acks all, gzip)", [
                    "--exporter", "kafka", "--kafka-exporter-brokers", broker.url,
                    "--kafka-exporter-traces-topic", TOPIC, "--kafka-exporter-format", "protobuf",
                    "--kafka-exporter-compression", "gzip", "--kafka-exporter-acks", "all"], bodies, n_spans)
        finally:
            broker.stop()
    if "rotel-blackhole" in wanted:
        figures["rotel-blackhole"] = run_rotel(tmp, rotel, "Rotel -> blackhole", ["--exporter", "blackhole"],
                                               bodies, n_spans)
    return figures


RATIOS = (
    ("receiver", "rotel-kafka", "tracepipe receiver / Rotel -> Kafka (goal >= 0.70)"),
    ("embedded", "chdb-floor", "tracepipe run / chDB sink-path floor (goal >= 0.60)"),
    ("embedded", "rotel-blackhole", "tracepipe run / Rotel -> blackhole"),
    ("embedded", "receiver", "tracepipe run / tracepipe receiver"),
)


def print_round(figures: dict[str, Figure], title: str) -> None:
    if title:
        print(f"-- {title}")
    print(f"{'target':<46} {'spans/CPU-s':>12} {'CPU s':>7} {'wall spans/s':>13} {'peak RSS':>9}")
    for f in figures.values():
        print(f"{f.name:<46} {f.per_core:>12,.0f} {f.cpu_s:>7.2f} {f.spans / f.wall_s:>13,.0f} {f.rss_mb:>6.0f} MB")
    for a, b, label in RATIOS:
        if a in figures and b in figures:
            print(f"ratio  {label}: {figures[a].per_core / figures[b].per_core:.2f}")
    if "embedded" in figures:
        print(f"goal   tracepipe run >= 20,000 spans per CPU-second: {figures['embedded'].per_core:,.0f}")


def print_summary(rounds: list[dict[str, Figure]]) -> None:
    """Median and range over the rounds; each ratio is taken within a round, then summarised."""
    print(f"-- {len(rounds)} rounds: median (min - max)")
    for key in rounds[0]:
        values = [r[key].per_core for r in rounds]
        print(f"{rounds[0][key].name:<46} {statistics.median(values):>12,.0f} spans/CPU-s "
              f"({min(values):,.0f} - {max(values):,.0f})")
    for a, b, label in RATIOS:
        if a in rounds[0] and b in rounds[0]:
            values = [r[a].per_core / r[b].per_core for r in rounds]
            print(f"ratio  {label}: {statistics.median(values):.2f} ({min(values):.2f} - {max(values):.2f})")


if __name__ == "__main__":
    main()
