"""Tenants with real bearer tokens against a real `tracepipe run`: the ingest token's tenant is
stamped whatever the client claims, read tokens see their own tenant, only admin deletes, and the
audit log names the tokens. (Skipped where the auth package is absent.)"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_proc import PipelineProcess, cli, start_pipeline

pytest.importorskip("pipeline.auth.tokens")

NS = 1_000_000_000
TOKENS = {  # name -> (tenant, scopes)
    "acme-ingest": ("acme", ["ingest"]),
    "globex-ingest": ("globex", ["ingest"]),
    "acme-read": ("acme", ["read"]),
    "globex-read": ("globex", ["read"]),
    "admin": ("ops", ["admin"]),
}


def _kv(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _request(p: PipelineProcess, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def _spans(claimed_tenant: str) -> tuple[str, dict[str, Any]]:
    """One trace whose client claims `claimed_tenant` at both levels (the receiver must overrule it)."""
    tid = uuid.uuid4().hex
    now = time.time_ns()
    span = {"traceId": tid, "spanId": uuid.uuid4().hex[:16], "name": "chat", "kind": 3,
            "startTimeUnixNano": str(now - 2 * NS), "endTimeUnixNano": str(now - NS),
            "attributes": [_kv("user.id", "u1"), _kv("tenant.id", claimed_tenant)]}
    resource = {"attributes": [_kv("service.name", "bot"), _kv("tenant.id", claimed_tenant)]}
    return tid, {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}


def test_tokens_scope_reads_deletes_and_the_audit_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {name: secrets.token_urlsafe(24) for name in TOKENS}
    entries = [{"id": name, "sha256": hashlib.sha256(tok.encode()).hexdigest(), "tenant": TOKENS[name][0],
                "scopes": TOKENS[name][1]} for name, tok in tokens.items()]
    token_ids = {name: e["sha256"][:12] for name, e in zip(tokens, entries, strict=True)}
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
        acme_tid, acme_body = _spans("globex")  # acme's token, claiming to be globex
        globex_tid, globex_body = _spans("acme")
        for token, body in ((tokens["acme-ingest"], acme_body), (tokens["globex-ingest"], globex_body)):
            status, _ = _request(p, "POST", f"{p.otlp_http}/v1/traces", token, body)
            assert status == 200
        status, _ = _request(p, "POST", f"{p.otlp_http}/v1/traces", tokens["acme-read"], _spans("acme")[1])
        assert status == 403  # a read token cannot ingest

        def listed(name: str) -> dict[str, str]:
            status, body = _request(p, "GET", f"{p.api}/api/traces", tokens[name])
            assert status == 200, body
            return {t["trace_id"]: t["tenant_id"] for t in body["traces"]}

        deadline = time.monotonic() + 30
        while len(listed("admin")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed("admin") == {acme_tid: "acme", globex_tid: "globex"}  # stamped from the tokens
        assert listed("acme-read") == {acme_tid: "acme"}
        assert listed("globex-read") == {globex_tid: "globex"}
        status, trace = _request(p, "GET", f"{p.api}/api/traces/{acme_tid}", tokens["acme-read"])
        assert status == 200 and trace["spans"][0]["resource_attributes"]["tenant.id"] == "acme"
        assert "tenant.id" not in trace["spans"][0]["attributes"]  # the span-level claim was removed
        status, _ = _request(p, "GET", f"{p.api}/api/traces/{acme_tid}", tokens["globex-read"])
        assert status == 404
        status, _ = _request(p, "DELETE", f"{p.api}/api/users/u1", tokens["acme-read"])
        assert status == 403

        # The CLI goes through the API with the token of TRACEPIPE_TOKEN.
        api = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{p.api_port}"]
        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["globex-read"])
        out = cli("traces", "list", "--json", *api)
        assert out.returncode == 0, out.stderr
        assert [t["trace_id"] for t in json.loads(out.stdout)["traces"]] == [globex_tid]
        refused = cli("forget", "--tenant", "globex", "--yes", *api)
        assert refused.returncode != 0 and listed("admin") == {acme_tid: "acme", globex_tid: "globex"}
        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["admin"])
        done = cli("forget", "--user", "u1", "--tenant", "acme", "--yes", "--json", *api)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["removed"]["clickhouse"] == {"spans": 1, "trace_summaries": 1}
        assert listed("admin") == {globex_tid: "globex"}

        audit = cli("audit", "--json", "--limit", "1000", *api)
        assert audit.returncode == 0, audit.stderr
        seen = {(e["token_id"], e["tenant"], e["method"], e["route"], e["status"]) for e in json.loads(audit.stdout)}
        assert (token_ids["globex-read"], "globex", "GET", "/api/traces/{trace_id}", 404) in seen
        assert (token_ids["admin"], "ops", "DELETE", "/api/users/{id}", 200) in seen
        assert ("refused", "-", "DELETE", "/api/users/{id}", 403) in seen  # the read token's attempt
        assert all(tok not in audit.stdout for tok in tokens.values())  # token ids, never tokens
        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["acme-read"])
        assert cli("audit", *api).returncode != 0  # the audit log is admin only
    finally:
        assert p.stop() == 0, p.log()
