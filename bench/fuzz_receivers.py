"""Fuzz both OTLP receivers of a real `tracepipe run` and report what came back.

Starts `tracepipe run` as a subprocess on free loopback ports with a temporary data
directory (or uses `--root` to run another checkout's code), then sends N payloads
(default 100,000), split between OTLP/HTTP and OTLP/gRPC, from a seeded mutation fuzzer:

- protobuf: valid export requests (random spans with every AnyValue type, nested values
  near the depth limit, events, links) mutated at the message level (extreme or invalid
  field values, ids of the wrong length, deep nesting one past the limit, huge strings,
  invalid UTF-8 spliced into string fields) and at the byte level (bit flips, inserted,
  deleted and duplicated runs, huge varints, truncation);
- OTLP/JSON: the same requests as OTLP/JSON, mutated in the tree (a node replaced by a
  value of another type, 5,000-digit integers, NaN/Infinity tokens, lone surrogates,
  wrong enum names, deep nesting, removed or renamed keys) and as text (truncated,
  bytes flipped);
- transport: identity, gzip, deflate, corrupt and truncated gzip/deflate bodies, unknown
  Content-Encoding, wrong or missing Content-Type, gRPC with and without gzip compression.

Payload i is generated from random.Random(f"{seed}:{i}") alone, so `--only I` replays one.
Every 5xx answer (HTTP status >= 500; gRPC INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED), every
transport failure (reset, timeout: a hang) is saved as a reproducer under --out (body +
headers as JSON). 503 / UNAVAILABLE and 429 / RESOURCE_EXHAUSTED with Retry-After are the
documented backpressure answers and are counted, not flagged. At the end: status counts
per receiver, the slowest answer, the target's VmRSS growth, and whether the pipeline is
still ready and still stores a good span. Exit status 1 when anything was flagged.

    nice python bench/fuzz_receivers.py [-n 100000] [--seed 1] [--concurrency 8] [--out DIR] [--idle 10]

Figures are from a shared machine: the slowest answer includes scheduling noise.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import gzip
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import free_port  # noqa: E402

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
KV_DEPTH_LIMIT = 32  # pipeline/otlp/limits.py: what upb decodes again
GRPC_FLAGGED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
                grpc.StatusCode.UNIMPLEMENTED}
NOW = time.time_ns()


# --- generation ---------------------------------------------------------------------------


@dataclass
class Payload:
    index: int
    receiver: str  # "http" or "grpc"
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    grpc_gzip: bool = False
    kind: str = ""


def _any(av: Any, r: random.Random, depth: int) -> None:
    choice = r.random()
    if depth > 1 and choice < 0.15:
        for _ in range(r.randint(0, 3)):
            kv = av.kvlist_value.values.add(key=r.choice(["a", "b", "gen_ai.x", ""]))
            _any(kv.value, r, depth - 1)
        av.kvlist_value.SetInParent()
    elif depth > 1 and choice < 0.3:
        for _ in range(r.randint(0, 3)):
            _any(av.array_value.values.add(), r, depth - 1)
        av.array_value.SetInParent()
    elif choice < 0.55:
        av.string_value = r.choice(["gpt-4o", "openai", "chat", "x" * r.randint(0, 64), "ü✓", ""])
    elif choice < 0.7:
        av.int_value = r.choice([0, 1, -1, 2**63 - 1, -(2**63), r.randint(0, 10**6)])
    elif choice < 0.8:
        av.double_value = r.choice([0.0, 1.5, -2.25, float("inf"), float("nan"), 1e308])
    elif choice < 0.9:
        av.bool_value = r.random() < 0.5
    elif choice < 0.97:
        av.bytes_value = r.randbytes(r.randint(0, 16))
    # else: an empty AnyValue


GENAI = [("gen_ai.request.model", "gpt-4o-mini"), ("gen_ai.provider.name", "openai"),
         ("gen_ai.operation.name", "chat"), ("user.id", "u-1")]


def valid_request(r: random.Random) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(r.randint(1, 2)):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = r.choice(["fuzz", "svc-a", ""])
        for _ in range(r.randint(1, 2)):
            ss = rs.scope_spans.add()
            ss.scope.name = "fuzz"
            for _ in range(r.randint(1, 4)):
                start = NOW - r.randint(0, 3600) * 10**9
                sp = ss.spans.add(trace_id=r.randbytes(16), span_id=r.randbytes(8),
                                  parent_span_id=r.choice([b"", r.randbytes(8)]), name=r.choice(["chat", "op", ""]),
                                  kind=r.randint(0, 5), start_time_unix_nano=start,
                                  end_time_unix_nano=start + r.randint(0, 10**10))
                if r.random() < 0.5:
                    for k, v in GENAI:
                        sp.attributes.add(key=k).value.string_value = v
                    sp.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = r.randint(0, 5000)
                    sp.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = r.randint(0, 5000)
                for _ in range(r.randint(0, 5)):
                    _any(sp.attributes.add(key=f"k{r.randint(0, 20)}").value, r, r.randint(1, 6))
                if r.random() < 0.3:
                    ev = sp.events.add(time_unix_nano=start, name="ev")
                    _any(ev.attributes.add(key="e").value, r, 3)
                if r.random() < 0.2:
                    lk = sp.links.add(trace_id=r.randbytes(16), span_id=r.randbytes(8))
                    _any(lk.attributes.add(key="l").value, r, 3)
                sp.status.code = r.randint(0, 2)
    return req


def _a_span(req: ExportTraceServiceRequest) -> Any:
    return req.resource_spans[0].scope_spans[0].spans[0]


def _deep(av: Any, depth: int, kind: str) -> None:
    for _ in range(depth - 1):
        av = av.kvlist_value.values.add(key="d").value if kind == "kv" else av.array_value.values.add()
    av.string_value = "leaf"


def mutate_message(req: ExportTraceServiceRequest, r: random.Random) -> None:
    sp = _a_span(req)
    m = r.randrange(12)
    if m == 0:
        sp.trace_id = r.randbytes(r.choice([0, 1, 15, 17, 32]))
    elif m == 1:
        sp.span_id = r.choice([b"", bytes(8), r.randbytes(7), r.randbytes(9)])
    elif m == 2:
        sp.parent_span_id = r.randbytes(r.choice([1, 7, 9, 16]))
    elif m == 3:
        sp.start_time_unix_nano = r.choice([0, 1, 2**63 - 1, NOW + 10**18, NOW])
        sp.end_time_unix_nano = r.choice([0, max(0, sp.start_time_unix_nano - 1), NOW])
    elif m == 4:
        _deep(sp.attributes.add(key="deep").value, KV_DEPTH_LIMIT + r.choice([0, 1, 5]), "kv")
    elif m == 5:
        _deep(sp.attributes.add(key="deep").value, 48 + r.choice([0, 1]), "arr")
    elif m == 6:
        sp.attributes.add(key="big").value.string_value = "x" * r.choice([10**5, 10**6, 2 * 10**6])
    elif m == 7:
        sp.name = "n" * r.choice([1000, 5000, 100_000])
    elif m == 8:
        for i in range(r.choice([1001, 3000])):
            sp.attributes.add(key=f"a{i}").value.int_value = i
    elif m == 9:
        sp.kind = r.choice([-1, 6, 2**31 - 1])
        sp.status.code = r.choice([3, -5, 2**31 - 1])
    elif m == 10:
        sp.flags = r.choice([0, 2**32 - 1])
        sp.dropped_attributes_count = 2**32 - 1
    else:
        for _ in range(r.randint(50, 500)):
            s2 = req.resource_spans[0].scope_spans[0].spans.add()
            s2.CopyFrom(sp)
            s2.span_id = r.randbytes(8)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def mutate_bytes(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        if not b:
            b += r.randbytes(4)
        m = r.randrange(8)
        pos = r.randrange(len(b))
        if m == 0:
            b[pos] ^= 1 << r.randrange(8)
        elif m == 1:
            b[pos] = r.randrange(256)
        elif m == 2:
            b[pos:pos] = r.randbytes(r.randint(1, 8))
        elif m == 3:
            del b[pos:pos + r.randint(1, 16)]
        elif m == 4:
            end = min(len(b), pos + r.randint(1, 64))
            b[pos:pos] = b[pos:end] * r.randint(1, 8)
        elif m == 5:
            b[pos:pos] = bytes([r.choice([0x0A, 0x12, 0x1A, 0x2A, 0x3A])]) + _varint(r.choice([2**31, 2**63, 10**6]))
        elif m == 6:
            b[pos:pos] = b"\x52" + _varint(4) + b"\xff\xfe\xc0\xaf"  # invalid UTF-8 where a string may be
        else:
            del b[pos:]
    return bytes(b)


BAD_JSON_VALUES: list[Callable[[random.Random], Any]] = [
    lambda r: None, lambda r: True, lambda r: [], lambda r: {}, lambda r: "", lambda r: "zz",
    lambda r: -1, lambda r: 2**64, lambda r: 1.5, lambda r: 1e400, lambda r: "1e400",
    lambda r: "\ud800", lambda r: "abc\udfff", lambda r: "NaN", lambda r: "-Infinity",
    lambda r: "STATUS_CODE_WHAT", lambda r: {"stringValue": 5}, lambda r: [[[[[]]]]],
    lambda r: "0" * r.choice([31, 33, 64]), lambda r: "9" * 30, lambda r: {"intValue": "12x"},
    lambda r: {"kvlistValue": {"values": "no"}}, lambda r: {"arrayValue": {"values": [1, 2]}},
    lambda r: {"bytesValue": "!!!not base64"}, lambda r: {"doubleValue": "Infinity"},
]
BIG_INT_TOKEN = "9" * 5000


def _json_nodes(doc: Any, path: tuple = ()) -> list[tuple[Any, Any]]:
    """(container, key) of every node."""
    out: list[tuple[Any, Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out.extend(_json_nodes(v))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out.extend(_json_nodes(v))
    return out


def to_otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
                for lk in sp.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in lk:
                            lk[key] = base64.b64decode(lk[key]).hex()
    return doc


def mutate_json(doc: dict[str, Any], r: random.Random) -> str:
    token = None
    for _ in range(r.randint(1, 3)):
        nodes = _json_nodes(doc)
        if not nodes:
            break
        container, key = r.choice(nodes)
        m = r.randrange(6)
        if m <= 2:
            container[key] = r.choice(BAD_JSON_VALUES)(r)
        elif m == 3 and isinstance(container, dict):
            container[key.upper() if r.random() < 0.5 else key + "_"] = container.pop(key)
        elif m == 4 and isinstance(container, dict):
            del container[key]
        else:
            token = r.choice(["NaN", "Infinity", "-Infinity", BIG_INT_TOKEN, "-" + BIG_INT_TOKEN])
            container[key] = "@@TOKEN@@"
    text = json.dumps(doc, ensure_ascii=r.random() < 0.5)
    if token:
        text = text.replace('"@@TOKEN@@"', token)
    return text


def make_payload(seed: int, index: int) -> Payload:
    r = random.Random(f"{seed}:{index}")
    receiver = "grpc" if r.random() < 0.35 else "http"
    req = valid_request(r)
    kind = []
    if r.random() < 0.4:
        mutate_message(req, r)
        kind.append("message")
    as_json = receiver == "http" and r.random() < 0.5
    if as_json:
        doc = to_otlp_json(req)
        if r.random() < 0.7:
            text = mutate_json(doc, r)
            kind.append("json-tree")
        else:
            text = json.dumps(doc)
        body = text.encode("utf-8", "surrogatepass")
        if r.random() < 0.15:
            body = mutate_bytes(body, r)
            kind.append("json-bytes")
    else:
        body = req.SerializeToString()
        if r.random() < 0.5:
            body = mutate_bytes(body, r)
            kind.append("bytes")
    if receiver == "grpc":
        return Payload(index, "grpc", body, grpc_gzip=r.random() < 0.3, kind="+".join(kind) or "valid")
    ctype = "application/json" if as_json else "application/x-protobuf"
    headers = {"Content-Type": ctype}
    t = r.random()
    if t < 0.05:
        headers["Content-Type"] = r.choice(["text/plain", "application/protobuf", "",
                                            "application/json; charset=latin-1",
                                            "application/x-protobuf; proto=x", "multipart/form-data"])
        kind.append("content-type")
    elif t < 0.08:
        del headers["Content-Type"]
        kind.append("no-content-type")
    e = r.random()
    if e < 0.2:
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
        if r.random() < 0.2:
            body = mutate_bytes(body, r) if r.random() < 0.5 else body[: r.randrange(len(body))]
            kind.append("bad-gzip")
    elif e < 0.3:
        body = zlib.compress(body, 1)
        headers["Content-Encoding"] = "deflate"
        if r.random() < 0.2:
            body = body[: r.randrange(len(body))]
            kind.append("bad-deflate")
    elif e < 0.33:
        headers["Content-Encoding"] = r.choice(["br", "zstd", "gzip, deflate", "x" * 300])
        kind.append("bad-encoding")
    elif e < 0.36:
        headers["Content-Encoding"] = "gzip"
        kind.append("not-gzip")
    if r.random() < 0.03:
        body = body[: r.randrange(len(body) + 1)]
        kind.append("truncated")
    return Payload(index, "http", body, headers, kind="+".join(kind) or "valid")


# --- sending ------------------------------------------------------------------------------


class Target:
    def __init__(self, http_port: int, grpc_addr: str) -> None:
        self.http_port = http_port
        self.grpc_addr = grpc_addr
        self.local = threading.local()
        self.timeout = 60.0

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def _call(self) -> Any:
        call = getattr(self.local, "call", None)
        if call is None:
            self.local.channel = grpc.insecure_channel(
                self.grpc_addr, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
            call = self.local.channel.unary_unary(METHOD, response_deserializer=ExportTraceServiceResponse.FromString)
            self.local.call = call
        return call

    def send(self, p: Payload) -> str:
        if p.receiver == "grpc":
            try:
                compression = grpc.Compression.Gzip if p.grpc_gzip else grpc.Compression.NoCompression
                self._call()(p.body, timeout=self.timeout, compression=compression)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.request("POST", "/v1/traces", body=p.body, headers=p.headers)
                resp = conn.getresponse()
                resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    self.local.conn = None
                return str(resp.status)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                self.local.conn = None
                if attempt:  # a fresh connection failed too
                    return f"conn:{type(e).__name__}"
            except TimeoutError:
                conn.close()
                self.local.conn = None
                return "timeout"
        return "conn:?"


def flagged(receiver: str, status: str) -> bool:
    if status.startswith("conn:") or status in ("timeout", "DEADLINE_EXCEEDED"):
        return True
    if receiver == "http":
        return int(status) >= 500 and status != "503"
    return grpc.StatusCode[status] in GRPC_FLAGGED


# --- the target ---------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Pipeline:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    tmp: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}"

    def ready(self) -> bool:
        try:
            return _get(self.api + "/readyz")[0] == 200
        except OSError:
            return False

    def stores_a_good_span(self, timeout: float = 60) -> bool:
        req = valid_request(random.Random("good"))
        tid = os.urandom(16)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    sp.trace_id = tid
        rq = urllib.request.Request(f"http://127.0.0.1:{self.ports[1]}/v1/traces", data=req.SerializeToString(),
                                    headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(rq, timeout=30) as r:
            if r.status != 200:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _get(f"{self.api}/api/traces/{tid.hex()}")[0] == 200:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.tmp / "run.log").read_text(errors="replace")


def start_pipeline(root: str, extra: list[str]) -> Pipeline:
    tmp = Path(tempfile.mkdtemp(prefix="tp-fuzz-"))
    ports = [free_port() for _ in range(4)]
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--data-dir", str(tmp / "data"),
           "--otlp-grpc", f"127.0.0.1:{ports[0]}", "--otlp-http", f"127.0.0.1:{ports[1]}",
           "--api", f"127.0.0.1:{ports[2]}", "--metrics", f"127.0.0.1:{ports[3]}", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": root}
    with open(tmp / "run.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env)
    p = Pipeline(proc, ports, tmp)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tracepipe run exited with {proc.returncode}:\n{p.log()[-3000:]}")
        if p.ready():
            return p
        time.sleep(0.2)
    p.stop()
    raise TimeoutError("tracepipe run not ready")


# --- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    counts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    flagged: list[tuple[int, str, str, str]] = field(default_factory=list)  # index, receiver, status, file
    slowest: tuple[float, int, str, str] = (0.0, -1, "", "")
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_idle_kib: int = 0
    idle: float = 0.0
    ready_after: bool = False
    stores_after: bool = False
    tracebacks: int = 0
    elapsed: float = 0.0
    sent: int = 0
    wedged_after: int | None = None  # payloads answered before the target stopped answering

    @property
    def failures(self) -> int:
        return len(self.flagged)

    def ok(self) -> bool:
        return (not self.flagged and self.ready_after and self.stores_after and not self.tracebacks
                and self.wedged_after is None)

    def text(self, n: int) -> str:
        lines = [f"{self.sent} of {n} payloads in {self.elapsed:.0f} s ({self.sent / max(self.elapsed, 1e-9):.0f}/s)"]
        if self.wedged_after is not None:
            lines.append(f"  TARGET WEDGED: requests stopped getting answers after {self.wedged_after} payloads "
                         "(the run was stopped; see the timeouts below)")
        for receiver in ("http", "grpc"):
            row = sorted((s, c) for (rcv, s), c in self.counts.items() if rcv == receiver)
            lines.append(f"  {receiver:4s}: " + ", ".join(f"{s}={c}" for s, c in row))
        lines.append(f"  5xx / transport failures: {self.failures}")
        for index, receiver, status, path in self.flagged[:50]:
            lines.append(f"    #{index} {receiver} {status} -> {path}")
        secs, index, receiver, kind = self.slowest
        lines.append(f"  slowest answer: {secs:.3f} s (#{index}, {receiver}, {kind})")
        lines.append(f"  target VmRSS: {self.rss_start_kib / 1024:.0f} MB -> {self.rss_end_kib / 1024:.0f} MB "
                     f"({(self.rss_end_kib - self.rss_start_kib) / 1024:+.0f} MB)"
                     + (f", after {self.idle:.0f} s idle {self.rss_idle_kib / 1024:.0f} MB "
                        f"({(self.rss_idle_kib - self.rss_start_kib) / 1024:+.0f} MB)" if self.idle else ""))
        lines.append(f"  tracebacks in the target's log: {self.tracebacks}")
        lines.append(f"  afterwards: ready={self.ready_after}, stores a good span={self.stores_after}")
        return "\n".join(lines)


def run_fuzz(pipe: Pipeline, n: int, seed: int, concurrency: int, out: Path, only: int | None = None,
             progress: bool = False, idle: float = 0.0, timeout: float = 30.0) -> Report:
    """Send the payloads; stop early when `concurrency` requests in a row got no answer within
    `timeout` seconds (the target is wedged: every further request would wait as long)."""
    target = Target(pipe.ports[1], f"127.0.0.1:{pipe.ports[0]}")
    target.timeout = timeout
    report = Report(rss_start_kib=rss_kib(pipe.proc.pid))
    lock = threading.Lock()
    done = [0]
    timeouts_in_a_row = [0]
    wedged = threading.Event()
    t_start = time.monotonic()

    def one(index: int) -> None:
        if wedged.is_set():
            return
        p = make_payload(seed, index)
        t0 = time.monotonic()
        status = target.send(p)
        took = time.monotonic() - t0
        with lock:
            report.counts[(p.receiver, status)] += 1
            if took > report.slowest[0]:
                report.slowest = (took, index, p.receiver, p.kind)
            if flagged(p.receiver, status):
                out.mkdir(parents=True, exist_ok=True)
                path = out / f"fuzz-{seed}-{index}.bin"
                path.write_bytes(p.body)
                path.with_suffix(".json").write_text(json.dumps(
                    {"index": index, "seed": seed, "receiver": p.receiver, "headers": p.headers,
                     "grpc_gzip": p.grpc_gzip, "status": status, "kind": p.kind}, indent=1))
                report.flagged.append((index, p.receiver, status, str(path)))
            done[0] += 1
            report.sent = done[0]
            if status in ("timeout", "DEADLINE_EXCEEDED"):
                timeouts_in_a_row[0] += 1
                if timeouts_in_a_row[0] >= concurrency and not wedged.is_set():
                    wedged.set()
                    report.wedged_after = done[0] - timeouts_in_a_row[0]
            else:
                timeouts_in_a_row[0] = 0
            if progress and done[0] % 5000 == 0:
                print(f"  {done[0]}/{n} sent, {len(report.flagged)} flagged, "
                      f"{time.monotonic() - t_start:.0f} s", file=sys.stderr, flush=True)

    indices = [only] if only is not None else range(n)
    with ThreadPoolExecutor(concurrency) as pool:
        for _ in pool.map(one, indices):
            pass
    report.elapsed = time.monotonic() - t_start
    report.ready_after = pipe.ready()
    try:
        report.stores_after = pipe.stores_a_good_span()
    except OSError:  # no answer at all
        report.stores_after = False
    report.rss_end_kib = rss_kib(pipe.proc.pid)
    if idle:
        time.sleep(idle)
        report.idle = idle
        report.rss_idle_kib = rss_kib(pipe.proc.pid)
    report.tracebacks = pipe.log().count("Traceback")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="payloads to send (default 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=8, help="client threads")
    ap.add_argument("--out", default="fuzz-failures", help="directory for reproducers of flagged answers")
    ap.add_argument("--only", type=int, help="send only payload INDEX (replay a reproducer)")
    ap.add_argument("--root", default=str(ROOT), help="checkout whose code `tracepipe run` runs")
    ap.add_argument("--keep", action="store_true", help="keep the target's data directory and log")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle before the last VmRSS reading")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take before it is a hang")
    args = ap.parse_args()
    pipe = start_pipeline(args.root, [])
    try:
        report = run_fuzz(pipe, args.n, args.seed, args.concurrency, Path(args.out), args.only, progress=True,
                          idle=args.idle, timeout=args.timeout)
    finally:
        pipe.stop()
        if args.keep:
            print(f"target data and log kept in {pipe.tmp}")
        else:
            shutil.rmtree(pipe.tmp, ignore_errors=True)
    print(report.text(1 if args.only is not None else args.n))
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    sys.exit(0 if report.ok() else 1)


if __name__ == "__main__":
    main()
