"""Auth, tenant stamping and TLS against a real `tracepipe run`, driven by the real OTel SDK exporters.

The exporters run in subprocesses (tests/otel_sdk_export.py) configured ONLY through the
OTEL_EXPORTER_OTLP_* environment variables, as an application would configure them. The
tokens come from `tracepipe token create`, its printed lines pasted into the config.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_proc import ROOT, PipelineProcess, cli, start_pipeline
from tests.tls_certs import TestCA

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=18)

TENANT = "acme"
CA_BUNDLE_VARS = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR",
                  "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"}


def create_token(tenant: str, scopes: str, name: str) -> tuple[str, str]:
    """(token, the YAML lines `tracepipe token create` printed for the tokens list)."""
    out = cli("token", "create", "--tenant", tenant, "--scopes", scopes, "--id", name)
    assert out.returncode == 0, out.stderr
    token = re.search(r"^token: (\S+)$", out.stdout, re.M).group(1)
    lines = "\n".join(line for line in out.stdout.splitlines() if line.startswith("  "))
    return token, lines


def write_config(path: Path, token_lines: list[str], receivers_tls: str = "", api_extra: str = "",
                 metrics_extra: str = "") -> Path:
    tokens = "\n".join(token_lines)
    path.write_text(f"""
auth:
  tokens:
{tokens}
receivers:
  otlp:
    grpc:
      endpoint: 127.0.0.1:4317
{receivers_tls}
    http:
      endpoint: 127.0.0.1:4318
{receivers_tls}
processors:
  normalize: {{}}
sinks:
  clickhouse: {{}}
service:
  api:
    endpoint: 127.0.0.1:8081
{api_extra}
  metrics:
    endpoint: 127.0.0.1:9464
{metrics_extra}
  pipelines:
    traces:
      processors: [normalize]
      sinks: [clickhouse]
""")
    return path


def tls_block(ca: TestCA, server, client_ca: bool, indent: str = "      ") -> str:
    lines = ["tls:", f"  cert_file: {server.cert_file}", f"  key_file: {server.key_file}", "  reload_interval: 0"]
    if client_ca:
        lines.append(f"  client_ca_file: {ca.cert_file}")
    return "\n".join(indent + line for line in lines)


def sdk_export(protocol: str, endpoint: str, token: str | None = None, ca: Path | None = None,
               client: Any = None) -> subprocess.CompletedProcess[str]:
    # the exporter alone decides what to trust: requests would prefer REQUESTS_CA_BUNDLE & co. to the
    # exporter's certificate_file, so the machine's CA-bundle variables are left out
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k not in CA_BUNDLE_VARS}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf"})
    if token is not None:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"authorization=Bearer {token}"
    if ca is not None:
        env["OTEL_EXPORTER_OTLP_CERTIFICATE"] = str(ca)
    if client is not None:
        env["OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"] = str(client.cert_file)
        env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = str(client.key_file)
    return subprocess.run([sys.executable, "-m", "tests.otel_sdk_export", protocol], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)


def result_of(run: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert run.returncode == 0, run.stderr
    trace_id = re.search(r"trace_id=([0-9a-f]{32})", run.stdout).group(1)
    return re.search(r"result=(\w+)", run.stdout).group(1), trace_id


def api_get(base: str, path: str, token: str | None = None, ca: Path | None = None
            ) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            body = r.read()
            return r.status, (json.loads(body) if r.headers.get_content_type() == "application/json"
                              else body.decode()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def wait_trace(p: PipelineProcess, trace_id: str, token: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = api_get(p.api, f"/api/traces/{trace_id}", token, p.api_ca)
        if status == 200:
            return body
        assert status == 404, (status, body)
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} not stored within {timeout}s:\n{p.log()}")


def spans_of(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return trace["spans"]


# --- one pipeline with auth and TLS receivers (server certificate only) -------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    ca = TestCA(tmp / "ca")
    server = ca.issue("server")
    ingest, ingest_lines = create_token(TENANT, "ingest", "app")
    reader, reader_lines = create_token(TENANT, "read", "dashboard")
    cfg = write_config(tmp / "tracepipe.yaml", [ingest_lines, reader_lines],
                       receivers_tls=tls_block(ca, server, client_ca=False),
                       metrics_extra="    auth: true")
    p = start_pipeline(tmp / "data", "-c", str(cfg), ready_timeout=90)
    try:
        yield {"p": p, "ca": ca, "ingest": ingest, "reader": reader}
    finally:
        p.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_with_ingest_token_is_accepted_and_its_tenant_stamped_over_the_clients_claim(secured, protocol):
    p = secured["p"]
    url = f"https://127.0.0.1:{p.grpc_port if protocol == 'grpc' else p.http_port}"
    outcome, trace_id = result_of(sdk_export(protocol, url, secured["ingest"], secured["ca"].cert_file))
    assert outcome == "SUCCESS"
    spans = spans_of(wait_trace(p, trace_id, secured["reader"]))
    assert len(spans) == 1
    assert spans[0]["resource_attributes"]["tenant.id"] == TENANT  # the client claimed "intruder"
    assert "tenant.id" not in spans[0]["attributes"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_without_or_with_a_wrong_token_is_refused_unauthenticated(secured, protocol):
    p = secured["p"]
    url = f"https://127.0.0.1:{p.grpc_port if protocol == 'grpc' else p.http_port}"
    expected = "UNAUTHENTICATED" if protocol == "grpc" else "401"
    for token in (None, "tp_not-a-token-anyone-was-given", secured["ingest"] + "x"):
        run = sdk_export(protocol, url, token, secured["ca"].cert_file)
        outcome, _ = result_of(run)
        assert outcome == "FAILURE"
        assert expected in run.stderr, run.stderr
        assert secured["ingest"] not in p.log()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_with_a_read_only_token_is_refused_permission_denied(secured, protocol):
    p = secured["p"]
    url = f"https://127.0.0.1:{p.grpc_port if protocol == 'grpc' else p.http_port}"
    run = sdk_export(protocol, url, secured["reader"], secured["ca"].cert_file)
    outcome, _ = result_of(run)
    assert outcome == "FAILURE"
    assert ("PERMISSION_DENIED" if protocol == "grpc" else "403") in run.stderr, run.stderr


def test_http_refusal_carries_www_authenticate_bearer(secured):
    p = secured["p"]
    ctx = ssl.create_default_context(cafile=str(secured["ca"].cert_file))
    req = urllib.request.Request(f"https://127.0.0.1:{p.http_port}/v1/traces", data=b"", method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10, context=ctx)
    assert e.value.code == 401
    assert e.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_needs_a_read_token_and_health_probes_stay_open(secured):
    p = secured["p"]
    status, _, headers = api_get(p.api, "/api/traces")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert api_get(p.api, "/api/traces", "tp_wrong")[0] == 401
    assert api_get(p.api, "/api/traces", secured["ingest"])[0] == 403
    assert api_get(p.api, "/api/traces", secured["reader"])[0] == 200
    assert api_get(p.api, "/api/analytics/cost?by=model", secured["reader"])[0] == 200
    # the budget check endpoint too (this config has no budgets sink: 404 once past auth)
    assert api_get(p.api, "/api/budgets/check?user=u-1")[0] == 401
    assert api_get(p.api, "/api/budgets/check?user=u-1", secured["reader"])[0] == 404
    assert api_get(p.api, "/healthz")[0] == 200
    assert api_get(p.api, "/readyz")[0] == 200


def test_metrics_with_auth_true_takes_the_same_tokens_and_counts_failures(secured):
    p = secured["p"]
    base = f"http://127.0.0.1:{p.metrics_port}"
    assert api_get(base, "/metrics")[0] == 401
    status, text, _ = api_get(base, "/metrics", secured["reader"])
    assert status == 200
    assert re.search(r'tracepipe_auth_failures_total\{listener="api",reason="missing"\} [1-9]', text), text
    assert re.search(r'tracepipe_auth_failures_total\{listener="api",reason="forbidden"\} [1-9]', text)
    assert secured["reader"] not in text and secured["ingest"] not in text


def test_cli_query_sends_the_token_from_flag_or_environment(secured, tmp_path):
    p = secured["p"]
    outcome, trace_id = result_of(sdk_export("http", f"https://127.0.0.1:{p.http_port}", secured["ingest"],
                                             secured["ca"].cert_file))
    assert outcome == "SUCCESS"
    wait_trace(p, trace_id, secured["reader"])
    refused = cli("traces", "show", trace_id, "--api-url", p.api, "--json")
    assert refused.returncode != 0 and "--token" in refused.stderr
    shown = cli("traces", "show", trace_id, "--api-url", p.api, "--json", "--token", secured["reader"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["spans"][0]["resource_attributes"]["tenant.id"] == TENANT
    env_run = subprocess.run([sys.executable, "-m", "pipeline.cli", "traces", "list", "--api-url", p.api, "--json"],
                             capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env={**os.environ, "TRACEPIPE_TOKEN": secured["reader"]})
    assert env_run.returncode == 0, env_run.stderr
    assert trace_id in env_run.stdout


# --- mTLS and certificate reload --------------------------------------------------------


def served_serial(port: int, ca: TestCA, client) -> int:
    """Serial number of the certificate the server presents on a new connection."""
    ctx = ssl.create_default_context(cafile=str(ca.cert_file))
    ctx.load_cert_chain(client.cert_file, client.key_file)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        from cryptography import x509

        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


@pytest.fixture(scope="module")
def mutual(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    ca = TestCA(tmp / "ca")
    server = ca.issue("server")
    client = ca.issue("client", server=False)
    ingest, ingest_lines = create_token(TENANT, "ingest,read", "app")
    api_server = ca.issue("api")
    cfg = write_config(tmp / "tracepipe.yaml", [ingest_lines], receivers_tls=tls_block(ca, server, client_ca=True),
                       api_extra=tls_block(ca, api_server, client_ca=False, indent="    "),
                       metrics_extra=tls_block(ca, api_server, client_ca=False, indent="    ") + "\n    auth: true")
    p = start_pipeline(tmp / "data", "-c", str(cfg), ready_timeout=90, api_ca=ca.cert_file)
    try:
        yield {"p": p, "ca": ca, "server": server, "client": client, "token": ingest}
    finally:
        p.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mtls_refuses_a_client_without_certificate_and_accepts_one_with(mutual, protocol):
    p = mutual["p"]
    url = f"https://127.0.0.1:{p.grpc_port if protocol == 'grpc' else p.http_port}"
    without, _ = result_of(sdk_export(protocol, url, mutual["token"], mutual["ca"].cert_file))
    assert without == "FAILURE"
    with_cert, trace_id = result_of(sdk_export(protocol, url, mutual["token"], mutual["ca"].cert_file,
                                               mutual["client"]))
    assert with_cert == "SUCCESS"
    assert spans_of(wait_trace(p, trace_id, mutual["token"]))[0]["resource_attributes"]["tenant.id"] == TENANT


def test_a_certificate_replaced_on_disk_is_served_without_restart(mutual):
    p, ca, server, client = mutual["p"], mutual["ca"], mutual["server"], mutual["client"]
    ports = {"grpc": p.grpc_port, "http": p.http_port}
    before = {k: served_serial(port, ca, client) for k, port in ports.items()}
    assert set(before.values()) == {server.serial}
    renewed = ca.issue("server-renewed", cert_file=server.cert_file, key_file=server.key_file)
    after = {k: served_serial(port, ca, client) for k, port in ports.items()}
    assert after == {"grpc": renewed.serial, "http": renewed.serial}
    pid = p.proc.pid
    outcome, trace_id = result_of(sdk_export("grpc", f"https://127.0.0.1:{p.grpc_port}", mutual["token"],
                                             ca.cert_file, client))
    assert outcome == "SUCCESS" and p.proc.pid == pid and p.proc.poll() is None
    assert spans_of(wait_trace(p, trace_id, mutual["token"]))


def test_api_and_metrics_serve_tls_and_take_tokens(mutual):
    p, ca = mutual["p"], mutual["ca"]
    assert p.api.startswith("https://")
    assert api_get(p.api, "/api/traces", None, ca.cert_file)[0] == 401
    assert api_get(p.api, "/api/traces", mutual["token"], ca.cert_file)[0] == 200
    metrics = f"https://127.0.0.1:{p.metrics_port}"
    assert api_get(metrics, "/metrics", None, ca.cert_file)[0] == 401
    status, text, _ = api_get(metrics, "/metrics", mutual["token"], ca.cert_file)
    assert status == 200 and "tracepipe_receiver_requests_total" in text
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP on a TLS port
        api_get(f"http://127.0.0.1:{p.api_port}", "/healthz")


# --- config rules -------------------------------------------------------------------------


def test_non_loopback_bind_without_auth_is_a_config_error_naming_the_path(tmp_path):
    run = cli("run", "--data-dir", str(tmp_path / "d"), "--otlp-grpc", "0.0.0.0:0", "--otlp-http", "off",
              "--api", "off", "--metrics", "off", timeout=60)
    assert run.returncode == 2
    assert "receivers.otlp.grpc.endpoint" in run.stderr and "allow_unauthenticated" in run.stderr
