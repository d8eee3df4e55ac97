"""Prometheus for tests: Debian's `prometheus` binary on a free loopback port with tmp storage.

`start_local_prometheus(targets, rule_files)` writes a config scraping `targets` (HOST:PORT
of /metrics endpoints) every second and evaluating `rule_files` every second, so a test
sees recorded series and alerts within seconds. `LOCAL["prometheus"]` starts one that
scrapes only itself. `query(...)` runs an instant PromQL query over the HTTP API.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.services import LOCAL, RunningService, free_port, wait_for_port
from tests.services.requirements import require_binary


def start_local_prometheus(
    targets: Sequence[str] = (),
    rule_files: Sequence[str | Path] = (),
    *,
    interval: str = "1s",
    workdir: str | None = None,
    ready_timeout: float = 30.0,
) -> RunningService:
    binary = require_binary("prometheus")
    port = free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="tracepipe-prometheus-")
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [
            {"job_name": "tracepipe", "static_configs": [{"targets": list(targets)}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
        ],
    }
    config_path = Path(workdir) / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = open(Path(workdir) / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={Path(workdir) / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port("127.0.0.1", port, proc=proc, timeout=ready_timeout)
        _wait_ready(url, proc, ready_timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RunningService("prometheus", "127.0.0.1", port, url, process=proc, workdir=workdir)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"prometheus at {url} not ready after {timeout}s")


def query(svc: RunningService, expr: str) -> list[dict[str, Any]]:
    """Instant query; returns the result list (vector or matrix) or [scalar]. Raises on a PromQL error."""
    body = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(f"{svc.url}/api/v1/query", data=body, timeout=10) as r:
            payload = json.loads(r.read())
    except urllib.error.HTTPError as e:
        payload = json.loads(e.read() or b"{}")
        raise ValueError(f"{expr!r}: {payload.get('errorType')}: {payload.get('error')}") from None
    data = payload["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def targets_up(svc: RunningService) -> dict[str, str]:
    with urllib.request.urlopen(f"{svc.url}/api/v1/targets", timeout=10) as r:
        active = json.loads(r.read())["data"]["activeTargets"]
    return {t["scrapeUrl"]: t["health"] for t in active}


LOCAL["prometheus"] = start_local_prometheus
