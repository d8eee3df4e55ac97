"""Embedded-path throughput and latency: OTLP -> chain -> chDB in one `tracepipe run` process.

Prints, from one run:
- the raw floor: protobuf parse alone, OTLP -> Span decode alone, chDB insert alone
  (Arrow table of the sink's own column layout), each in spans/s on one core;
- the whole path: spans/s of the pipeline process per core (spans stored / CPU seconds
  the process used) and per wall second, with 10 attributes per span and GenAI spans
  carrying a few KB of prompt and completion;
- receive-to-queryable latency p50/p99: a trace is sent, then the query API is polled
  until the trace is there, while a background load runs;
- the write-ahead log's cost: the same workload through the in-memory queue (wal off), the
  default `fsync: batch` and `fsync: always`, in an order rotating per round, each as a ratio
  to the in-memory queue of the same round (absolute figures move with the machine's load; the ratios less).

- per stage of the whole path: seconds spent in decode, each processor and each sink (the _sum of
  tracepipe_decode_duration_seconds, tracepipe_processor_duration_seconds and
  tracepipe_sink_write_duration_seconds read from /metrics before and after), per span and as a
  share of the process CPU, so a regression shows where it comes from; and the process CPU by
  thread kind (the interpreter's threads against chDB's query and merge threads, from /proc);

    python bench/throughput.py [--spans 150000] [--latency-samples 100] [--wal-rounds 2] [--wal-only]
                               [--path-only] [--profile /tmp/run.svg] [--gc-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import make_request, spans_in
from tests.pipeline_proc import PipelineProcess, start_pipeline

TRACES_PER_REQUEST = 170  # 510 spans: the OTel SDK's default export batch is 512


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads so far, by thread name with digits dropped (Python's
    own threads are "python" unless named; chDB's are named by ClickHouse: "QueryPipelineEx",
    "MergeMutate", ...): shows how much of the process CPU is the interpreter and how much the
    chDB engine, which per-stage wall times cannot tell apart."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip().rstrip("0123456789") or "?"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def print_threads(before: dict[str, float], after: dict[str, float], cpu_s: float) -> None:
    """CPU by thread kind over the run (threads that ended during the run are missing)."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
    shown = sorted(((k, v) for k, v in delta.items() if v >= 0.01), key=lambda kv: -kv[1])
    for name, secs in shown:
        print(f"thread {name:<28} {secs:>7.2f} s  {100 * secs / cpu_s:>5.1f} % of process CPU")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def floor_figures(bodies: list[bytes], n_spans: int) -> dict[str, float]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from pipeline.otlp.decode import decode_request

    t0 = time.process_time()
    reqs = [ExportTraceServiceRequest.FromString(b) for b in bodies]
    parse = n_spans / (time.process_time() - t0)
    t0 = time.process_time()
    spans = [s for r in reqs for s in decode_request(r)]
    decode = n_spans / (time.process_time() - t0)
    insert = chdb_insert_floor(spans)
    return {"protobuf parse": parse, "OTLP -> Span decode": decode, "chDB insert_arrow": insert}


def chdb_insert_floor(spans: list) -> float:
    """Insert the sink's own Arrow table straight into chDB, timing the insert alone."""
    import subprocess

    code = r"""
import sys, time, pickle
import clickhouse_connect
sys.path.insert(0, sys.argv[2])
from sinks.clickhouse import spans_to_arrow, schema_statements
spans = pickle.load(open(sys.argv[1], "rb"))
table = spans_to_arrow(spans)
import tempfile
d = tempfile.mkdtemp()
c = clickhouse_connect.get_client(dsn=f"chdb://{d}")
for stmt in schema_statements("bench", "otel_traces", None):
    c.command(stmt)
t0 = time.perf_counter()
c.insert_arrow("bench.otel_traces", table)
print(len(spans) / (time.perf_counter() - t0))
"""
    import pickle

    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump(spans, f)
    try:
        out = subprocess.run([sys.executable, "-c", code, f.name, str(Path(__file__).resolve().parents[1])],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return float("nan")
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(f.name)


STAGE_SUMS = (
    ("tracepipe_decode_duration_seconds_sum", "decode (OTLP -> spans)"),
    ("tracepipe_processor_duration_seconds_sum{", "processor "),
    ("tracepipe_sink_write_duration_seconds_sum{", "sink "),
)
BATCHES = 'tracepipe_batch_spans_count{pipeline="all"}'  # batches taken off the transport


async def stage_seconds(session: aiohttp.ClientSession, p: PipelineProcess) -> dict[str, float]:
    """Seconds each stage has spent so far: the _sum of the decode, processor and sink
    duration histograms on /metrics, by stage name ("processor redact", "sink clickhouse")."""
    async with session.get(f"http://127.0.0.1:{p.metrics_port}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(BATCHES):
            out["batches"] = float(line.rsplit(" ", 1)[1])
        for prefix, label in STAGE_SUMS:
            if line.startswith(prefix):
                name, value = line.rsplit(" ", 1)
                if "{" in name:
                    label += name.split('"')[1]
                out[label] = out.get(label, 0.0) + float(value)
    return out


def print_stages(stages: dict[str, float], cpu_s: float, n_spans: int) -> None:
    """Per-stage time (wall time on the worker: the stages run on the event loop, except where a
    sink hands its write to a thread) in microseconds per span and as a share of the process CPU."""
    stages = dict(stages)
    batches = stages.pop("batches", 0.0)
    if batches:
        print(f"stage  {batches:.0f} batches taken off the queue, {n_spans / batches:,.0f} spans per batch")
    for label, secs in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"stage  {label:<28} {secs:>7.2f} s  {secs * 1e6 / n_spans:>7.1f} us/span  "
              f"{100 * secs / cpu_s:>5.1f} % of process CPU")
    print("stage  (sink figures are wall time and include the chDB insert in its thread; stages overlap)")


async def sent_spans(session: aiohttp.ClientSession, p: PipelineProcess) -> float:
    async with session.get(f"http://127.0.0.1:{p.metrics_port}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith('tracepipe_sink_sent_spans_total{sink="clickhouse"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def post_all(session: aiohttp.ClientSession, url: str, bodies: list[bytes], concurrency: int,
                   headers: dict[str, str] | None = None) -> int:
    """POST every body with `concurrency` senders, retrying 429/503; returns the retries."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    retries = 0

    async def sender() -> None:
        nonlocal retries
        while not queue.empty():
            retries += await post_with_retry(session, url, queue.get_nowait(), headers)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return retries


async def post_with_retry(session: aiohttp.ClientSession, url: str, body: bytes,
                          headers: dict[str, str] | None = None) -> int:
    retries = 0
    sent_headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
    while True:
        async with session.post(url, data=body, headers=sent_headers) as r:
            await r.read()
            if r.status == 200:
                return retries
            if r.status in (429, 503):
                retries += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "0.1")) / 10)
                continue
            raise RuntimeError(f"unexpected status {r.status}")


async def throughput(p: PipelineProcess, bodies: list[bytes], n_spans: int, concurrency: int = 4,
                     headers: dict[str, str] | None = None) -> dict:
    url = f"{p.otlp_http}/v1/traces"
    async with aiohttp.ClientSession() as session:
        base = await sent_spans(session, p)
        stages0 = await stage_seconds(session, p)
        cpu0 = cpu_seconds(p.proc.pid)
        threads0 = cpu_by_thread(p.proc.pid)
        t0 = time.perf_counter()
        retries = await post_all(session, url, bodies, concurrency, headers)
        accepted = time.perf_counter() - t0
        while await sent_spans(session, p) - base < n_spans:
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(p.proc.pid) - cpu0
        threads = (threads0, cpu_by_thread(p.proc.pid))
        stages1 = await stage_seconds(session, p)
    stages = {k: v - stages0.get(k, 0.0) for k, v in stages1.items()}
    return {"wall_s": wall, "accept_s": accepted, "cpu_s": cpu, "per_core": n_spans / cpu,
            "per_wall": n_spans / wall, "retries": retries, "stages": stages, "threads": threads}


def wal_config(tmp: Path, fsync: str | None) -> Path:
    """The embedded default config with the write-ahead log off (None) or on with `fsync`."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipeline" / "default.yaml").read_text())
    wal = {"enabled": False} if fsync is None else {"enabled": True, "fsync": fsync}
    cfg.setdefault("transport", {}).setdefault("memory", {})["wal"] = wal
    path = tmp / f"wal-{fsync or 'off'}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def wal_cost(bodies: list[bytes], n_spans: int, rounds: int) -> None:
    if rounds <= 0:
        return
    modes: list[tuple[str, str | None]] = [("memory", None), ("batch", "batch"), ("always", "always")]
    ratios: dict[str, list[float]] = {"batch": [], "always": []}
    core_ratios: dict[str, list[float]] = {"batch": [], "always": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds):
            per_wall: dict[str, float] = {}
            per_core: dict[str, float] = {}
            for label, fsync in modes[rnd % 3:] + modes[:rnd % 3]:  # rotate: no mode always runs first
                data = Path(tmp) / f"data-{label}-{rnd}"
                p = start_pipeline(data, "-c", str(wal_config(Path(tmp), fsync)))
                try:
                    r = asyncio.run(throughput(p, bodies, n_spans))
                finally:
                    p.stop()
                per_wall[label] = r["per_wall"]
                per_core[label] = r["per_core"]
                print(f"wal    round {rnd + 1} {label:<7} {r['per_wall']:>10,.0f} spans/s wall "
                      f"{r['per_core']:>10,.0f} spans/s per core, {r['retries']} retried requests")
            for label in ratios:
                ratios[label].append(per_wall[label] / per_wall["memory"])
                core_ratios[label].append(per_core[label] / per_core["memory"])
    for label, values in ratios.items():
        print(f"ratio  wal fsync={label:<6} / in-memory queue (wall throughput) = "
              f"{sum(values) / len(values):.2f}  (rounds: {', '.join(f'{v:.2f}' for v in values)}); "
              f"per core = {sum(core_ratios[label]) / len(values):.2f}")


BENCH_TOKEN = "tp_bench_" + "x" * 43  # a bench-only bearer token; the config holds its SHA-256


def security_config(tmp: Path, variant: str) -> Path:
    """The embedded default config: `plain` without redact, `redact` as shipped, `auth` with
    redact and bearer-token auth (BENCH_TOKEN)."""
    import hashlib

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipeline" / "default.yaml").read_text())
    if variant == "plain":
        cfg["processors"].pop("redact")
        for pipe in cfg["service"]["pipelines"].values():
            pipe["processors"] = [x for x in pipe["processors"] if x != "redact"]
    if variant == "auth":
        digest = hashlib.sha256(BENCH_TOKEN.encode()).hexdigest()
        cfg["auth"] = {"tokens": [{"sha256": digest, "id": "bench", "tenant": "bench", "scopes": ["ingest", "read"]}]}
    path = tmp / f"security-{variant}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def security_cost(bodies: list[bytes], n_spans: int, rounds: int) -> None:
    """Default redaction and auth, each as a ratio to the chain without redaction, same round."""
    variants = ["plain", "redact", "auth"]
    wall: dict[str, list[float]] = {"redact": [], "auth": []}
    core: dict[str, list[float]] = {"redact": [], "auth": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds):
            per_wall: dict[str, float] = {}
            per_core: dict[str, float] = {}
            for variant in variants[rnd % 3:] + variants[:rnd % 3]:  # rotate: no variant always runs first
                p = start_pipeline(Path(tmp) / f"data-{variant}-{rnd}", "-c", str(security_config(Path(tmp), variant)))
                headers = {"Authorization": f"Bearer {BENCH_TOKEN}"} if variant == "auth" else None
                try:
                    r = asyncio.run(throughput(p, bodies, n_spans, headers=headers))
                finally:
                    p.stop()
                per_wall[variant], per_core[variant] = r["per_wall"], r["per_core"]
                print(f"secure round {rnd + 1} {variant:<7} {r['per_wall']:>10,.0f} spans/s wall "
                      f"{r['per_core']:>10,.0f} spans/s per core, {r['retries']} retried requests")
            for variant in wall:
                wall[variant].append(per_wall[variant] / per_wall["plain"])
                core[variant].append(per_core[variant] / per_core["plain"])
    labels = {"redact": "default redaction", "auth": "default redaction + auth"}
    for variant, values in core.items():
        print(f"ratio  {labels[variant]:<25} / no redaction (per core) = {sum(values) / len(values):.2f}  "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)}); wall = {sum(wall[variant]) / len(values):.2f}")


def gc_cost(bodies: list[bytes], n_spans: int, rounds: int) -> None:
    """The whole path with Python's default garbage collector settings vs pipeline/gc_tuning.py
    (TRACEPIPE_GC_TUNING=0 / 1), alternating per round, as a ratio of spans per CPU-second."""
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds):
            per_core: dict[str, float] = {}
            for label in (("default", "tuned") if rnd % 2 == 0 else ("tuned", "default")):
                os.environ["TRACEPIPE_GC_TUNING"] = "1" if label == "tuned" else "0"
                try:
                    p = start_pipeline(Path(tmp) / f"gc-{label}-{rnd}")
                finally:
                    os.environ.pop("TRACEPIPE_GC_TUNING", None)
                try:
                    r = asyncio.run(throughput(p, bodies, n_spans))
                finally:
                    p.stop()
                per_core[label] = r["per_core"]
                print(f"gc     round {rnd + 1} {label:<8} {r['per_core']:>10,.0f} spans/s per core "
                      f"({r['cpu_s']:.1f} CPU s)")
            ratios.append(per_core["tuned"] / per_core["default"])
    print(f"ratio  gc tuned / Python defaults (spans per CPU-second) = {sum(ratios) / len(ratios):.2f}  "
          f"(rounds: {', '.join(f'{v:.2f}' for v in ratios)})")


async def latency(p: PipelineProcess, samples: int, background_rps: float) -> list[float]:
    """Receive-to-queryable: POST one trace, poll the API until it answers 200."""
    url = f"{p.otlp_http}/v1/traces"
    background = [make_request(TRACES_PER_REQUEST, seed=10_000 + i).SerializeToString() for i in range(20)]
    out: list[float] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:

        async def load() -> None:
            i = 0
            while not stop.is_set():
                await post_with_retry(session, url, background[i % len(background)])
                i += 1
                await asyncio.sleep(1 / background_rps)

        bg = asyncio.create_task(load())
        for i in range(samples):
            req = make_request(1, seed=900_000 + i)
            trace_id = req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
            t0 = time.perf_counter()
            await post_with_retry(session, url, req.SerializeToString())
            while True:
                async with session.get(f"{p.api}/api/traces/{trace_id}") as r:
                    await r.read()
                    if r.status == 200:
                        break
                await asyncio.sleep(0.005)
            out.append(time.perf_counter() - t0)
        stop.set()
        await bg
    return out


def start_profile(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the pipeline process until stop_profile (pip install py-spy)."""
    fmt = ["--format", "raw"] if out.endswith(".txt") else []
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "-o", out, "--nonblocking", *fmt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=150_000)
    ap.add_argument("--latency-samples", type=int, default=100)
    ap.add_argument("--background-rps", type=float, default=10.0, help="background requests/s during latency")
    ap.add_argument("--wal-rounds", type=int, default=2, help="rounds of memory / batch / always runs")
    ap.add_argument("--wal-only", action="store_true", help="only the write-ahead log cost")
    ap.add_argument("--security-rounds", type=int, default=2, help="rounds of plain / redact / redact+auth runs")
    ap.add_argument("--security-only", action="store_true", help="only the cost of default redaction and auth")
    ap.add_argument("--gc-rounds", type=int, default=0,
                    help="also compare Python's default GC settings with pipeline/gc_tuning.py, N rounds")
    ap.add_argument("--path-only", action="store_true",
                    help="only the floors and the whole path with per-stage figures (no latency, no WAL rounds)")
    ap.add_argument("--profile", metavar="FILE",
                    help="record the pipeline process with py-spy during the whole-path run (FILE: .svg flame "
                         "graph, or .txt for py-spy's raw collapsed stacks)")
    args = ap.parse_args()

    n_requests = max(1, args.spans // (TRACES_PER_REQUEST * 3))
    reqs = [make_request(TRACES_PER_REQUEST, seed=i) for i in range(n_requests)]
    bodies = [r.SerializeToString() for r in reqs]
    n_spans = sum(spans_in(r) for r in reqs)
    print(f"workload: {n_spans} spans in {len(bodies)} requests of {TRACES_PER_REQUEST * 3} spans, "
          f"10 attributes/span, {sum(map(len, bodies)) / n_spans:.0f} bytes/span on the wire")

    if args.wal_only:
        wal_cost(bodies, n_spans, args.wal_rounds)
        return
    if args.security_only:
        security_cost(bodies, n_spans, args.security_rounds)
        return
    floors = floor_figures(bodies, n_spans)
    for name, value in floors.items():
        print(f"floor  {name:<24} {value:>12,.0f} spans/s (one core)")

    with tempfile.TemporaryDirectory() as tmp:
        p = start_pipeline(Path(tmp) / "data")
        try:
            spy = start_profile(p.proc.pid, args.profile) if args.profile else None
            try:
                r = asyncio.run(throughput(p, bodies, n_spans))
            finally:
                if spy is not None:
                    stop_profile(spy)
            print(f"path   OTLP/HTTP -> chain -> chDB  {r['per_core']:>10,.0f} spans/s per core "
                  f"({r['cpu_s']:.1f} CPU s),  {r['per_wall']:,.0f} spans/s wall, {r['retries']} retried requests")
            print_stages(r["stages"], r["cpu_s"], n_spans)
            print_threads(*r["threads"], r["cpu_s"])
            if args.path_only:
                print(f"ratio  path per core / chDB insert floor = {r['per_core'] / floors['chDB insert_arrow']:.2f}")
                if args.gc_rounds:
                    gc_cost(bodies, n_spans, args.gc_rounds)
                return
            lat = asyncio.run(latency(p, args.latency_samples, args.background_rps))
            print(f"latency receive->queryable  p50 {pct(lat, 0.5) * 1000:.0f} ms  p99 {pct(lat, 0.99) * 1000:.0f} ms "
                  f"({len(lat)} traces, background {args.background_rps:.0f} req/s of "
                  f"{TRACES_PER_REQUEST * 3} spans)")
            print(f"memory pipeline process peak RSS {rss_mb(p.proc.pid):.0f} MB")
        finally:
            p.stop()
    print(f"ratio  path per core / decode floor = {r['per_core'] / floors['OTLP -> Span decode']:.2f}, "
          f"path per core / chDB insert floor = {r['per_core'] / floors['chDB insert_arrow']:.2f}")
    if args.gc_rounds:
        gc_cost(bodies, n_spans, args.gc_rounds)
    wal_cost(bodies, n_spans, args.wal_rounds)
    security_cost(bodies, n_spans, args.security_rounds)


if __name__ == "__main__":
    main()
