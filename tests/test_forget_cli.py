"""`tracepipe forget` and `tracepipe audit`: through the running pipeline's API, then on the data
directory itself once it stopped (the real CLI and `tracepipe run` as subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.pipeline_proc import ROOT, cli, start_pipeline
from tests.services import free_port

NS = 1_000_000_000


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _payload(now: int) -> tuple[dict[str, Any], dict[str, str]]:
    traces: dict[str, str] = {}
    resource_spans = []
    for tenant, rows in (("acme", [("a1", "u1"), ("a2", "u1")]), ("globex", [("g1", "u1"), ("g2", "u2")])):
        spans = []
        for name, user in rows:
            tid = traces[name] = uuid.uuid4().hex
            spans.append({"traceId": tid, "spanId": uuid.uuid4().hex[:16], "name": "chat", "kind": 3,
                          "startTimeUnixNano": str(now - 2 * NS), "endTimeUnixNano": str(now - NS),
                          "attributes": [_kv("gen_ai.request.model", "gpt-4o"), _kv("user.id", user),
                                         _kv("gen_ai.usage.cost_usd", 0.25)]})
        resource_spans.append({
            "resource": {"attributes": [_kv("service.name", "bot"), _kv("tenant.id", tenant)]},
            "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}],
        })
    return {"resourceSpans": resource_spans}, traces


def test_forget_and_audit_through_the_api_and_on_the_data_directory(tmp_path: Path) -> None:
    config = tmp_path / "tracepipe.yaml"
    config.write_text(yaml.safe_dump({
        "processors": {},
        "sinks": {"clickhouse": {}, "budgets": {"budgets": {"user_daily": {"scope": "user", "period": "day"}}}},
        "service": {"batch": {"timeout": 0.05}, "pipelines": {"traces": {"sinks": ["clickhouse", "budgets"]}}},
    }))
    data = tmp_path / "data"
    p = start_pipeline(data, "-c", str(config))
    api = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{p.api_port}"]
    try:
        body, traces = _payload(time.time_ns())
        req = urllib.request.Request(f"{p.otlp_http}/v1/traces", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        deadline = time.monotonic() + 30
        while len(p.get("/api/traces")[1]["traces"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(p.get("/api/traces")[1]["traces"]) == 4

        # Without --yes the CLI asks, and a "no" deletes nothing.
        refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "forget", "--user", "u1", *api],
                                 input="n\n", capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert refused.returncode == 1 and len(p.get("/api/traces")[1]["traces"]) == 4

        done = cli("forget", "--user", "u1", "--tenant", "acme", "--yes", "--json", *api)
        assert done.returncode == 0, done.stderr
        counts = json.loads(done.stdout)
        assert counts["removed"]["clickhouse"] == {"spans": 2, "trace_summaries": 2}
        assert counts["removed"]["budgets"] == {"counters": 1}
        left = {t["trace_id"] for t in p.get("/api/traces")[1]["traces"]}
        assert left == {traces["g1"], traces["g2"]}

        shown = cli("audit", "--since", "1h", *api)
        assert shown.returncode == 0, shown.stderr
        assert "DELETE" in shown.stdout and "/api/users/{id}" in shown.stdout and "id=u1" in shown.stdout
    finally:
        assert p.stop() == 0, p.log()

    offline = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{free_port()}"]
    gone = cli("forget", "--tenant", "globex", "--yes", *offline)
    assert gone.returncode == 0, gone.stderr
    assert "forgot tenant globex" in gone.stdout
    assert "spans=2 trace_summaries=2" in gone.stdout and "counters=2" in gone.stdout
    listed = cli("traces", "list", "--json", *offline)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["traces"] == []
    snapshot = json.loads((data / "budgets" / "budgets.json").read_text())
    assert snapshot["counters"] == {}
    audit = cli("audit", "--json", *offline)
    entries = json.loads(audit.stdout)
    assert entries[0]["token_id"] == "cli-local" and entries[0]["route"] == "tracepipe forget --tenant"
    assert any(e["method"] == "DELETE" and e["route"] == "/api/users/{id}" for e in entries)
