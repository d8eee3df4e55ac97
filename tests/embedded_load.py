"""Load and fault helpers for the embedded fault tests: OTLP/HTTP senders in threads that
remember which spans were acknowledged, how every request was answered and how long it took."""

from __future__ import annotations

import http.client
import itertools
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.workload import make_request
from tests.pipeline_proc import ROOT, PipelineProcess

_seeds = itertools.count(1_000_000)
_seed_lock = threading.Lock()


def next_seed() -> int:
    with _seed_lock:
        return next(_seeds)


def span_keys(req: Any) -> list[tuple[str, str]]:
    return [(s.trace_id.hex(), s.span_id.hex()) for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def embedded_config(tmp: Path, name: str, *, memory: dict[str, Any] | None = None,
                    service: dict[str, Any] | None = None, sinks: dict[str, Any] | None = None,
                    receiver: dict[str, Any] | None = None) -> Path:
    """pipeline/default.yaml with some sections overridden, written to tmp."""
    raw = yaml.safe_load((ROOT / "pipeline" / "default.yaml").read_text())
    if memory:
        raw["transport"]["memory"].update(memory)
    if service:
        for k, v in service.items():
            raw["service"][k] = v
    if sinks:
        raw["sinks"].update(sinks)
        raw["service"]["pipelines"]["traces"]["sinks"] += [s for s in sinks if s not in
                                                            raw["service"]["pipelines"]["traces"]["sinks"]]
    if receiver:
        raw["receivers"]["otlp"] = {**(raw["receivers"]["otlp"] or {}), **receiver}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class Load:
    """`threads` senders POSTing protobuf requests of `traces` traces (3 spans each) until stopped."""

    url: str
    threads: int = 4
    traces: int = 20
    client_timeout: float = 30.0
    max_requests: int = 100_000
    acked: set[tuple[str, str]] = field(default_factory=set)
    sent: set[tuple[str, str]] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    hangs: int = 0
    max_answer: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _count: int = 0

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.client_timeout + 10)

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _run(self) -> None:
        host, port = self.url.split("//", 1)[1].split("/", 1)[0].split(":")
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            with self._lock:
                if self._count >= self.max_requests:
                    return
                self._count += 1
            req = make_request(self.traces, seed=next_seed(), prompt_bytes=200)
            keys = span_keys(req)
            body = req.SerializeToString()
            t0 = time.monotonic()
            status = "error"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, int(port), timeout=self.client_timeout)
                conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                status = str(resp.status)
            except TimeoutError:
                status = "hang"
                conn = None
            except (OSError, http.client.HTTPException):
                status = "error"  # the process was killed: refused or reset, never answered
                conn = None
            elapsed = time.monotonic() - t0
            with self._lock:
                self.statuses[status] += 1
                self.sent.update(keys)
                if status == "hang":
                    self.hangs += 1
                elif status != "error":
                    self.max_answer = max(self.max_answer, elapsed)
                if status == "200":
                    self.acked.update(keys)
            if status in ("429", "503") or status == "error":
                self._stop.wait(0.05)


def metric(p: PipelineProcess, name: str) -> float | None:
    for line in p.metrics().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def queue_size(p: PipelineProcess) -> float:
    v = metric(p, 'tracepipe_queue_size{transport="memory"}')
    return -1 if v is None else v


def probe(p: PipelineProcess, path: str) -> tuple[int, Any]:
    try:
        return p.get(path)
    except (urllib.error.URLError, OSError) as e:
        return -1, str(e)


def aborted_http_request(host: str, port: int, body: bytes, *, send_all: bool) -> None:
    """Send a request and drop the connection with a reset before (or while) it is answered."""
    s = socket.create_connection((host, port), timeout=5)
    try:
        head = (f"POST /v1/traces HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + (body if send_all else body[: len(body) // 2]))
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
