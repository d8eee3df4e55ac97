"""Run the real `tracepipe` CLI as a subprocess on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class PipelineProcess:
    data_dir: Path
    grpc_port: int
    http_port: int
    api_port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    api_ca: Path | None = None  # the API serves TLS: trust this CA

    @property
    def api(self) -> str:
        return f"{'https' if self.api_ca else 'http'}://127.0.0.1:{self.api_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def get(self, path: str) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.api_ca)) if self.api_ca else None
        try:
            with urllib.request.urlopen(self.api + path, timeout=30, context=context) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `tracepipe ARGS` (as `python -m pipeline.cli`) and capture its output."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def start_pipeline(data_dir: Path, *extra: str, ready_timeout: float = 60,
                   api_ca: Path | None = None) -> PipelineProcess:
    """`tracepipe run` on free loopback ports, once ready. A start that lost a port to another
    process between the pick and the bind is tried again on other ports (twice at most)."""
    for attempt in range(3):
        try:
            return _start_pipeline(data_dir, *extra, ready_timeout=ready_timeout, api_ca=api_ca)
        except RuntimeError as e:
            if "address already in use" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_pipeline(data_dir: Path, *extra: str, ready_timeout: float, api_ca: Path | None) -> PipelineProcess:
    ports = [free_port() for _ in range(4)]
    log_path = data_dir.parent / f"{data_dir.name}.log"
    args = [sys.executable, "-m", "pipeline.cli", "run", "--data-dir", str(data_dir),
            "--otlp-grpc", f"127.0.0.1:{ports[0]}", "--otlp-http", f"127.0.0.1:{ports[1]}",
            "--api", f"127.0.0.1:{ports[2]}", "--metrics", f"127.0.0.1:{ports[3]}", *extra]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    p = PipelineProcess(data_dir, *ports, proc=proc, log_path=log_path, extra_args=list(extra), api_ca=api_ca)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tracepipe run exited with {proc.returncode}:\n{p.log()}")
        try:
            status, _ = p.get("/readyz")
            if status == 200:
                return p
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    p.stop()
    raise TimeoutError(f"tracepipe run not ready after {ready_timeout}s:\n{p.log()}")
