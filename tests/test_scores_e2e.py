"""Scores against a real `tracepipe run` with bearer tokens: POST /api/scores stores a score under the
token's tenant, it shows on the trace (API and `traces show`) and in `tracepipe quality` (cost vs
mean score), and the scope and tenant rules of every other endpoint hold."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_proc import PipelineProcess, cli, start_pipeline
from tests.test_tenants_auth_e2e import _kv, _request

pytest.importorskip("pipeline.auth.tokens")

NS = 1_000_000_000
TOKENS = {  # name -> (tenant, scopes)
    "acme-ingest": ("acme", ["ingest"]),
    "acme-read": ("acme", ["read"]),
    "globex-ingest": ("globex", ["ingest"]),
    "globex-read": ("globex", ["read"]),
}


def _llm_trace(model: str, cost: float, prompt_version: str) -> tuple[str, str, dict[str, Any]]:
    tid, sid = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    now = time.time_ns()
    attrs = [
        _kv("gen_ai.operation.name", "chat"),
        _kv("gen_ai.request.model", model),
        _kv("gen_ai.prompt.version", prompt_version),
        {"key": "gen_ai.usage.cost_usd", "value": {"doubleValue": cost}},
    ]
    span = {"traceId": tid, "spanId": sid, "name": f"chat {model}", "kind": 3,
            "startTimeUnixNano": str(now - 2 * NS), "endTimeUnixNano": str(now - NS), "attributes": attrs}
    resource = {"attributes": [_kv("service.name", "bot")]}
    return tid, sid, {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"},
                                                                                "spans": [span]}]}]}


def _wait_for_trace(p: PipelineProcess, tid: str, token: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _request(p, "GET", f"{p.api}/api/traces/{tid}", token)[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"trace {tid} never stored:\n{p.log()}")


def test_scores_show_on_the_trace_and_in_the_quality_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {name: secrets.token_urlsafe(24) for name in TOKENS}
    entries = [{"id": name, "sha256": hashlib.sha256(tok.encode()).hexdigest(), "tenant": TOKENS[name][0],
                "scopes": TOKENS[name][1]} for name, tok in tokens.items()]
    config = tmp_path / "tracepipe.yaml"
    config.write_text(json.dumps({
        "auth": {"tokens": entries},
        "processors": {},
        "sinks": {"clickhouse": {}},
        "service": {"batch": {"timeout": 0.05}, "pipelines": {"traces": {"sinks": ["clickhouse"]}}},
    }))
    data = tmp_path / "data"
    p = start_pipeline(data, "-c", str(config))
    try:
        big_tid, big_sid, big = _llm_trace("gpt-4o", 0.01, "v1")
        small_tid, _, small = _llm_trace("gpt-4o-mini", 0.002, "v2")
        for body in (big, small):
            assert _request(p, "POST", f"{p.otlp_http}/v1/traces", tokens["acme-ingest"], body)[0] == 200
        _wait_for_trace(p, big_tid, tokens["acme-read"])
        _wait_for_trace(p, small_tid, tokens["acme-read"])

        url = f"{p.api}/api/scores"
        ok = {"trace_id": big_tid, "span_id": big_sid, "name": "helpfulness", "value": 1.0, "source": "user",
              "comment": "solved my problem"}
        status, stored = _request(p, "POST", url, tokens["acme-ingest"], ok)
        assert status == 201, stored
        assert stored["tenant"] == "acme" and stored["id"] and stored["data_type"] == "numeric"
        for body in (
            {"trace_id": big_tid, "name": "helpfulness", "value": 0.5, "source": "evaluator"},
            {"trace_id": big_tid, "name": "thumbs", "value": "down", "source": "user"},
            {"trace_id": small_tid, "name": "helpfulness", "value": 0.2},
        ):
            assert _request(p, "POST", url, tokens["acme-ingest"], body)[0] == 201
        # another tenant's score on the same trace id never shows for acme
        foreign = {"trace_id": big_tid, "name": "helpfulness", "value": 0.0}
        assert _request(p, "POST", url, tokens["globex-ingest"], foreign)[0] == 201

        # scope and input rules
        status, err = _request(p, "POST", url, tokens["acme-read"], ok)
        assert status == 403 and "ingest" in err["error"]
        status, err = _request(p, "POST", url, tokens["acme-ingest"], {**ok, "source": "robot"})
        assert status == 400 and err["error"].startswith("source:")
        status, err = _request(p, "POST", url, tokens["acme-ingest"], {**ok, "trace_id": "xyz"})
        assert status == 400 and err["error"].startswith("trace_id:")
        status, err = _request(p, "POST", url, tokens["acme-ingest"], {**ok, "value": float("inf")})
        assert status == 400
        assert _request(p, "GET", f"{p.api}/api/quality", tokens["acme-ingest"])[0] == 403

        status, trace = _request(p, "GET", f"{p.api}/api/traces/{big_tid}", tokens["acme-read"])
        assert status == 200
        scores = {(s["name"], s["value"], s["source"], s["span_id"]) for s in trace["scores"]}
        assert scores == {("helpfulness", 1.0, "user", big_sid), ("helpfulness", 0.5, "evaluator", None),
                          ("thumbs", "down", "user", None)}
        assert _request(p, "GET", f"{p.api}/api/traces/{big_tid}", tokens["globex-read"])[0] == 404

        api = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{p.api_port}"]
        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["acme-read"])
        shown = cli("traces", "show", big_tid, *api)
        assert shown.returncode == 0, shown.stderr
        assert "scores (3):" in shown.stdout and "helpfulness = 1  [user] span " + big_sid in shown.stdout
        assert "thumbs = down  [user]" in shown.stdout

        out = cli("quality", "--by", "model", "--name", "helpfulness", "--json", *api)
        assert out.returncode == 0, out.stderr
        rows = {r["group"]: r for r in json.loads(out.stdout)}
        assert set(rows) == {"gpt-4o", "gpt-4o-mini"}
        assert rows["gpt-4o"]["mean_score"] == pytest.approx(0.75)  # acme's 1.0 and 0.5; globex's 0.0 excluded
        assert rows["gpt-4o"]["cost_usd"] == pytest.approx(0.01) and rows["gpt-4o"]["scores"] == 2
        assert rows["gpt-4o-mini"]["mean_score"] == pytest.approx(0.2)
        assert rows["gpt-4o-mini"]["cost_per_trace_usd"] == pytest.approx(0.002)
        table = cli("quality", "--by", "prompt_version", *api)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:2] == ["PROMPT_VERSION", "TRACES"]
        assert any(line.split()[0] == "v1" and line.split()[-1] == "0.750" for line in lines)  # categorical: no mean

        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["globex-read"])
        out = cli("quality", "--json", *api)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []  # globex has a score but no spans
    finally:
        assert p.stop() == 0, p.log()
