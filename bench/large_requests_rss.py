"""RSS of a real `tracepipe run` around three very large OTLP requests.

Starts `tracepipe run` (a subprocess on free loopback ports, a temporary data directory),
sends one small request so that every code path is loaded, reads VmRSS from
/proc/<pid>/status (baseline), then sends a 15 MiB string value, a 15 MiB model name (with
token counts, so the cost processor prices it) and a span of 1,000,000 attributes, waits
for the queue to drain, reads VmRSS (after), idles 10 s and reads it again (idle). Also
prints each request's status and answer time, the largest log line and how long the event
loop was blocked (the longest answer to /healthz, polled every 50 ms during the run).

    python bench/large_requests_rss.py [--idle 10] [--env MALLOC_ARENA_MAX=2] [--root /work/main]

Figures are from a shared machine: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import free_port  # noqa: E402

MiB = 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def request(attrs: list[tuple[str, object]], name: str = "op") -> bytes:
    now = time.time_ns()
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name=name,
        start_time_unix_nano=now - 10**9, end_time_unix_nano=now)
    for key, value in attrs:
        kv = sp.attributes.add(key=key)
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = str(value)
    return req.SerializeToString()


def post(url: str, body: bytes) -> tuple[int, float]:
    t0 = time.monotonic()
    rq = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(rq, timeout=300) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.monotonic() - t0


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def queue_empty(metrics_url: str) -> bool:
    _, text = get(metrics_url)
    for line in text.splitlines():
        if line.startswith("tracepipe_queue_size "):
            return float(line.split()[1]) == 0
    return True


class LoopProbe(threading.Thread):
    """Polls /healthz; the longest answer is how long the event loop was blocked."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.longest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            with contextlib.suppress(OSError):
                get(self.url)
            self.longest = max(self.longest, time.monotonic() - t0)
            self.stop.wait(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before the last reading")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the tracepipe process")
    ap.add_argument("--root", default=str(ROOT), help="checkout whose code `tracepipe run` runs (default: this one)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tp-rss-"))
    ports = [free_port() for _ in range(4)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": args.root, **dict(e.split("=", 1) for e in args.env)}
    log_path = tmp / "run.log"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--data-dir", str(tmp / "data"),
           "--otlp-grpc", f"127.0.0.1:{ports[0]}", "--otlp-http", f"127.0.0.1:{ports[1]}",
           "--api", f"127.0.0.1:{ports[2]}", "--metrics", f"127.0.0.1:{ports[3]}"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=args.root, env=env)
    api, otlp = f"http://127.0.0.1:{ports[2]}", f"http://127.0.0.1:{ports[1]}/v1/traces"
    metrics = f"http://127.0.0.1:{ports[3]}/metrics"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if get(api + "/readyz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        post(otlp, request([("gen_ai.request.model", "gpt-4o"), ("gen_ai.usage.input_tokens", 10)]))
        time.sleep(2)
        base = rss_kib(proc.pid)
        probe = LoopProbe(api + "/healthz")
        probe.start()
        cases = {
            "15 MiB string value": request([("gen_ai.request.model", "gpt-4o"), ("gen_ai.prompt", "x" * (15 * MiB))]),
            "15 MiB model name": request([("gen_ai.request.model", "m" * (15 * MiB)),
                                          ("gen_ai.provider.name", "openai"),
                                          ("gen_ai.usage.input_tokens", 10), ("gen_ai.usage.output_tokens", 5)]),
            "1,000,000 attributes": request([(f"a{i}", "v") for i in range(1_000_000)]),
        }
        for name, body in cases.items():
            status, took = post(otlp, body)
            print(f"{name:22s} {len(body) / MiB:5.1f} MiB -> {status} in {took:.2f} s", flush=True)
        del cases
        deadline = time.monotonic() + 120
        while not queue_empty(metrics) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        after = rss_kib(proc.pid)
        time.sleep(args.idle)
        idle = rss_kib(proc.pid)
        probe.stop.set()
        probe.join()
        longest_line = max((len(line) for line in log_path.read_bytes().splitlines()), default=0)
        print(f"VmRSS baseline {base / 1024:.0f} MB, after {after / 1024:.0f} MB, "
              f"after {args.idle:.0f} s idle {idle / 1024:.0f} MB (+{(idle - base) / 1024:.0f} MB)")
        print(f"longest /healthz answer (event loop blocked) {probe.longest:.2f} s; longest log line {longest_line} B")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.environ.get("KEEP_TMP"):
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
