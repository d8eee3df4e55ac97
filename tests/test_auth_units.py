"""Units of pipeline/auth: token checks, tenant stamping, the auth/tls config rules, the receiver registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.auth.config import TokenEntry
from pipeline.auth.principal import ANONYMOUS
from pipeline.auth.tenant import stamp_tenant
from pipeline.auth.tokens import Failure, TokenVerifier, new_token, token_sha256
from pipeline.config import ConfigError, build_config
from pipeline.receivers import RECEIVER_FACTORIES, build_receivers, record_endpoints
from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport
from tests.pipeline_proc import cli
from tests.tls_certs import TestCA

PIPES = {"pipelines": {"t": {"sinks": ["prometheus"]}}}


def cfg(**sections):  # type: ignore[no-untyped-def]
    raw = {"sinks": {"prometheus": {}}, "service": {**PIPES, **sections.pop("service", {})}, **sections}
    return build_config(raw, env={})


def errors_of(**sections) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as e:
        cfg(**sections)
    return e.value.errors


def entry(token: str, tenant: str = "acme", scopes: tuple[str, ...] = ("ingest",)) -> dict:
    return {"sha256": token_sha256(token), "tenant": tenant, "scopes": list(scopes)}


def test_verifier_names_the_reason_of_every_refusal():
    token = new_token()
    v = TokenVerifier([TokenEntry(**entry(token, scopes=("read",)))])
    assert v.check(None, "read").reason == "missing"
    assert v.check("Basic dXNlcjpwdw==", "read").reason == "malformed"
    assert v.check(f"Bearer {token}x", "read").reason == "invalid"
    refused = v.check(f"Bearer {token}", "ingest")
    assert isinstance(refused, Failure) and refused.reason == "forbidden" and refused.status == 403
    ok = v.check(f"bearer  {token} ", "read")
    assert not isinstance(ok, Failure)
    assert ok.tenant == "acme" and ok.token_id == token_sha256(token)[:12]


def test_admin_token_allows_every_scope_and_sees_all_tenants():
    token = new_token()
    p = TokenVerifier([TokenEntry(**entry(token, scopes=("admin",)))]).check(f"Bearer {token}", "ingest")
    assert not isinstance(p, Failure) and p.is_admin and p.tenant_filter is None


def test_new_tokens_are_random_and_prefixed():
    a, b = new_token(), new_token()
    assert a != b and a.startswith("tp_") and len(a) > 40


def _kv(attrs, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    kv = attrs.add()
    kv.key = key
    kv.value.string_value = value


def test_stamp_replaces_the_resource_tenant_and_removes_span_level_claims():
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _kv(rs.resource.attributes, "service.name", "svc")
    _kv(rs.resource.attributes, "tenant.id", "intruder")
    _kv(rs.resource.attributes, "tenant.id", "intruder-2")
    span = rs.scope_spans.add().spans.add()
    _kv(span.attributes, "tenant.id", "intruder")
    _kv(span.attributes, "user.id", "u1")
    req.resource_spans.add().scope_spans.add().spans.add()
    stamp_tenant(req, "acme")
    for r in req.resource_spans:
        assert [(kv.key, kv.value.string_value) for kv in r.resource.attributes if kv.key == "tenant.id"] == [
            ("tenant.id", "acme")]
    assert [kv.key for kv in span.attributes] == ["user.id"]
    assert req.resource_spans[0].resource.attributes[0].key == "service.name"


def test_stamp_with_wire_bytes_skips_the_span_scan_only_when_no_span_can_claim():
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    span = rs.scope_spans.add().spans.add()
    _kv(span.attributes, "tenant.id", "intruder")
    stamp_tenant(req, "acme", req.SerializeToString())  # the bytes contain the key: scanned
    assert len(span.attributes) == 0
    clean = ExportTraceServiceRequest()
    _kv(clean.resource_spans.add().scope_spans.add().spans.add().attributes, "user.id", "u")
    stamp_tenant(clean, "acme", clean.SerializeToString())
    assert clean.resource_spans[0].resource.attributes[0].value.string_value == "acme"
    assert [kv.key for kv in clean.resource_spans[0].scope_spans[0].spans[0].attributes] == ["user.id"]


def test_tokens_from_a_file_join_the_inline_ones(tmp_path: Path):
    inline, filed = new_token(), new_token()
    f = tmp_path / "tokens.yaml"
    import yaml

    f.write_text(yaml.safe_dump({"tokens": [entry(filed, tenant="beta", scopes=("read",))]}))
    c = cfg(auth={"tokens": [entry(inline)], "tokens_file": str(f)})
    assert [t.tenant for t in c.tokens] == ["acme", "beta"]
    from pipeline.auth.setup import verifier_of

    principal = verifier_of(c).check(f"Bearer {filed}", "read")
    assert not isinstance(principal, Failure) and principal.tenant == "beta"


def test_auth_config_errors_name_their_yaml_path(tmp_path: Path):
    errs = errors_of(auth={"tokens": [{"sha256": "not-hex", "tenant": "a", "scopes": ["ingest"]}]})
    assert any(e.startswith("auth.tokens[0].sha256") for e in errs), errs
    errs = errors_of(auth={"tokens": [entry("t", scopes=("write",))]})
    assert any(e.startswith("auth.tokens[0].scopes[0]") for e in errs), errs
    errs = errors_of(auth={"tokens_file": str(tmp_path / "missing.yaml")})
    assert any(e.startswith("auth.tokens_file: cannot read") for e in errs), errs
    errs = errors_of(receivers={"otlp": {"grpc": {"endpoint": "127.0.0.1:0", "auth": True}}})
    assert any(e.startswith("receivers.otlp.grpc.auth: true needs") for e in errs), errs


def test_non_loopback_listener_without_auth_is_an_error_unless_explicitly_allowed():
    errs = errors_of(receivers={"otlp": {"http": {"endpoint": "0.0.0.0:4318"}}},
                     service={"api": {"endpoint": "10.1.2.3:8081"}})
    assert any(e.startswith("receivers.otlp.http.endpoint: 0.0.0.0:4318") for e in errs), errs
    assert any(e.startswith("service.api.endpoint: 10.1.2.3:8081") for e in errs), errs
    assert not any(e.startswith("receivers.otlp.grpc") for e in errs)  # default 127.0.0.1
    cfg(receivers={"otlp": {"http": {"endpoint": "0.0.0.0:4318", "allow_unauthenticated": True}}})
    cfg(receivers={"otlp": {"http": {"endpoint": "0.0.0.0:4318"}}}, auth={"tokens": [entry("t")]})
    cfg(receivers={"otlp": {"http": {"endpoint": "0.0.0.0:4318"}}},
        auth={"tokens": [entry("t")], "allow_unauthenticated": True})
    cfg(service={"metrics": {"endpoint": "0.0.0.0:9464"}})  # /metrics: auth is opt-in
    errs = errors_of(receivers={"otlp": {"http": {"endpoint": "[::]:4318", "auth": False}}},
                     auth={"tokens": [entry("t")]})
    assert any(e.startswith("receivers.otlp.http.endpoint") for e in errs), errs


def test_tls_config_loads_files_and_refuses_what_grpc_cannot_do(tmp_path: Path):
    ca = TestCA(tmp_path)
    server = ca.issue("server")
    tls = {"cert_file": str(server.cert_file), "key_file": str(server.key_file), "min_version": "1.3"}
    errs = errors_of(receivers={"otlp": {"grpc": {"endpoint": "127.0.0.1:0", "tls": tls}}})
    assert errs == ['receivers.otlp.grpc.tls.min_version: gRPC listeners accept TLS 1.2 and 1.3 and cannot '
                    'refuse 1.2; use "1.2" here']
    c = cfg(receivers={"otlp": {"http": {"endpoint": "127.0.0.1:0", "tls": tls}}})
    assert c.receivers["otlp"].config.http.tls.min_version == "1.3"
    errs = errors_of(service={"api": {"endpoint": "127.0.0.1:0", "tls": {**tls, "cert_file": "/nope.crt"}}})
    assert errs == ["service.api.tls.cert_file: file not found: /nope.crt"]
    errs = errors_of(service={"api": {"endpoint": "127.0.0.1:0", "tls": {**tls, "key_file": str(ca.cert_file)}}})
    assert len(errs) == 1 and errs[0].startswith("service.api.tls: cannot load the certificate files"), errs
    errs = errors_of(service={"api": {"endpoint": "127.0.0.1:0", "tls": {"cert_file": str(server.cert_file)}}})
    assert any(e.startswith("service.api.tls.key_file") for e in errs), errs


async def test_receivers_are_built_through_the_registry_and_report_their_endpoints():
    assert "otlp" in RECEIVER_FACTORIES
    c = cfg(receivers={"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
                       "otlp/second": {"grpc": None, "http": {"endpoint": "127.0.0.1:0"}}})
    telemetry = Telemetry()
    receivers = build_receivers(c, MemoryTransport(100, telemetry), telemetry)
    assert sorted((r.receiver_id, r.kind) for r in receivers) == [
        ("otlp", "otlp_grpc"), ("otlp", "otlp_http"), ("otlp/second", "otlp_http")]
    try:
        for r in receivers:
            await r.start()
        seen = {}
        for r in receivers:
            host, port = r.endpoint.rsplit(":", 1)
            assert host == "127.0.0.1" and int(port) > 0
            seen[r.kind] = r.endpoint
    finally:
        for r in receivers:
            await r.stop()

    class Endpoints:
        otlp_grpc = None
        otlp_http = None

    ep = Endpoints()
    record_endpoints(receivers[:2], ep)
    assert ep.otlp_grpc == receivers[0].endpoint and ep.otlp_http == receivers[1].endpoint
    assert all(r.auth.enabled is False for r in receivers)
    assert ANONYMOUS.allows("admin")


def test_token_create_rejects_unknown_scopes():
    out = cli("token", "create", "--tenant", "t", "--scopes", "ingest,write")
    assert out.returncode == 2 and "write" in out.stderr


def test_with_an_auth_section_receivers_and_api_require_tokens_but_metrics_only_when_asked():
    c = cfg(auth={"tokens": [entry("t")]})
    otlp = c.receivers["otlp"].config
    assert otlp.grpc.auth_enabled(True) and otlp.http.auth_enabled(True) and c.service.api.auth_enabled(True)
    assert c.service.metrics.auth_enabled(True) is False
    asked = cfg(auth={"tokens": [entry("t")]}, service={"metrics": {"endpoint": "127.0.0.1:0", "auth": True}})
    assert asked.service.metrics.auth_enabled(True) is True
    opted_out = cfg(auth={"tokens": [entry("t")]}, receivers={"otlp": {"http": {"endpoint": "127.0.0.1:0",
                                                                                  "auth": False}}})
    assert opted_out.receivers["otlp"].config.http.auth_enabled(True) is False


def test_stamping_the_bytes_gives_the_request_stamping_the_message_gives():
    from bench.workload import make_request
    from pipeline.auth.tenant import stamp_tenant_wire

    req = make_request(4, seed=2, prompt_bytes=200)
    req.resource_spans.add().scope_spans.add().spans.add()  # a ResourceSpans without a resource
    req.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    wire = req.SerializeToString()
    stamped = stamp_tenant_wire(wire, "acme-" + "x" * 200)  # a long tenant: two-byte lengths
    assert stamped is not None
    stamp_tenant(req, "acme-" + "x" * 200, wire)
    assert ExportTraceServiceRequest.FromString(stamped) == req
    assert ExportTraceServiceRequest.FromString(stamped).resource_spans[0].resource.attributes[-1].key == "tenant.id"


def test_bytes_holding_a_tenant_id_anywhere_are_left_to_the_message_stamp():
    from pipeline.auth.tenant import stamp_tenant_wire

    req = ExportTraceServiceRequest()
    _kv(req.resource_spans.add().scope_spans.add().spans.add().attributes, "tenant.id", "intruder")
    assert stamp_tenant_wire(req.SerializeToString(), "acme") is None
    assert stamp_tenant_wire(b"\x10\x01", "acme") is None  # not a plain request
    assert stamp_tenant_wire(b"", "acme") == b""  # no ResourceSpans: nothing to stamp
