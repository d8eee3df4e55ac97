"""The Helm chart, rendered and linted by Helm's own Go SDK (helm-python-sdk, no helm binary).

Every option set documented in helm/tracepipe/README.md lives in helm/tracepipe/ci/*.yaml;
each is rendered, linted strictly, validated against the Kubernetes schemas with
`kubernetes-validate --strict`, and its rendered tracepipe config is loaded by the real
config loader. values.schema.json must reject bad values at install time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk")

from pipeline.config import ConfigError, build_config  # noqa: E402
from tests.services.requirements import require_binary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tracepipe"
OPTION_SETS: dict[str, dict[str, Any]] = {"default": {}} | {
    p.name.removesuffix("-values.yaml"): yaml.safe_load(p.read_text()) for p in sorted((CHART / "ci").glob("*.yaml"))
}
# Custom resources kubernetes-validate has no schema for; checked structurally below instead.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
KUBE_VERSIONS = ("1.29.0", "1.33.0")
# Environment the pods get (from values or Secrets); stands in for the real values here.
POD_ENV = {
    "KAFKA_BROKERS": "kafka:9092",
    "CLICKHOUSE_DSN": "http://default@clickhouse:8123/default",
    "REDIS_URL": "redis://redis:6379/0",
    "KAFKA_SASL_USERNAME": "u",
    "KAFKA_SASL_PASSWORD": "p",
    "SLACK_WEBHOOK_URL": "https://hooks.example/x",
}


@pytest.fixture(scope="module")
def chart():
    c = helm.Chart.load(str(CHART))
    yield c
    c.close()


def render(chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = chart.render(values or {}, name="tp", namespace="observability", is_install=True)
    docs: list[dict[str, Any]] = []
    for name, text in sorted(out.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = one(docs, "ConfigMap", "tp-tracepipe-config")
    return yaml.safe_load(cm["data"]["tracepipe.yaml"])


@pytest.fixture(scope="module")
def pod_files(tmp_path_factory) -> dict[str, Path]:
    """Stand-ins for the Secrets the pods mount: a tokens file and a TLS certificate, key and CA."""
    from tests.tls_certs import TestCA

    root = tmp_path_factory.mktemp("pod")
    ca = TestCA(root / "ca")
    tls_dir = root / "tls"
    tls_dir.mkdir()
    ca.issue("tracepipe", cert_file=tls_dir / "tls.crt", key_file=tls_dir / "tls.key")
    (tls_dir / "ca.crt").write_bytes(ca.cert_file.read_bytes())
    auth_dir = root / "auth"
    auth_dir.mkdir()
    (auth_dir / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [
        {"sha256": "0" * 64, "id": "app", "tenant": "acme", "scopes": ["ingest"]}]}))
    return {"/etc/tracepipe-auth": auth_dir, "/etc/tracepipe-tls": tls_dir}


def localize(raw: dict[str, Any], pod_files: dict[str, Path]) -> dict[str, Any]:
    """The rendered config with the pod's Secret mount paths pointing at the stand-in files."""
    text = json.dumps(raw)
    for mount, local in pod_files.items():
        text = text.replace(mount + "/", f"{local}/")
    return json.loads(text)


def containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return [c for d in workloads for c in d["spec"]["template"]["spec"]["containers"]]


# --- lint, Kubernetes schemas -------------------------------------------------------------


@pytest.mark.parametrize("option_set", sorted(OPTION_SETS))
def test_chart_lints_strictly(option_set: str) -> None:
    report = helm.lint(str(CHART), OPTION_SETS[option_set], strict=True, namespace="observability")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_every_rendered_manifest_passes_kubernetes_validate_strict(chart, tmp_path: Path) -> None:
    files: list[Path] = []
    crds: list[dict[str, Any]] = []
    for option_set, values in sorted(OPTION_SETS.items()):
        for i, doc in enumerate(render(chart, values)):
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                crds.append(doc)
                continue
            path = tmp_path / f"{option_set}-{i:02d}-{doc['kind']}.yaml"
            path.write_text(yaml.safe_dump(doc))
            files.append(path)
    exe = shutil.which("kubernetes-validate") or str(Path(sys.executable).with_name("kubernetes-validate"))
    for version in KUBE_VERSIONS:
        proc = subprocess.run(
            [exe, "--strict", "-k", version, *map(str, files)], capture_output=True, text=True, timeout=300
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "ERROR" not in out and "WARN" not in out, out
        assert out.count("INFO") == len(files), out
    kinds = {d["kind"] for d in crds}
    assert kinds == {"ServiceMonitor", "PrometheusRule", "ScaledObject"}, kinds
    for doc in crds:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), doc["metadata"]
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, doc


# --- workloads ----------------------------------------------------------------------------


def test_default_is_distributed_receivers_and_workers_with_probes_limits_and_locked_down_pods(chart) -> None:
    docs = render(chart)
    assert by_kind(docs, "StatefulSet") == []
    receiver = one(docs, "Deployment", "tp-tracepipe-receiver")
    worker = one(docs, "Deployment", "tp-tracepipe-worker")
    svc = one(docs, "Service", "tp-tracepipe-receiver")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "otlp-grpc": 4317,
        "otlp-http": 4318,
        "api": 8081,
        "metrics": 9464,
    }
    for dep, args in (
        (receiver, ["receiver", "-c", "/etc/tracepipe/tracepipe.yaml"]),
        (worker, ["worker", "-c", "/etc/tracepipe/tracepipe.yaml"]),
    ):
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["args"] == args
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/etc/tracepipe", "/var/lib/tracepipe"}
        spread = pod["topologySpreadConstraints"][0]
        assert spread["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        assert "checksum/config" in dep["spec"]["template"]["metadata"]["annotations"]
    hpa = one(docs, "HorizontalPodAutoscaler", "tp-tracepipe-receiver")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in receiver["spec"], "the HPA owns the receiver replicas"
    assert worker["spec"]["replicas"] == 2
    assert {d["metadata"]["name"] for d in by_kind(docs, "PodDisruptionBudget")} == {
        "tp-tracepipe-receiver",
        "tp-tracepipe-worker",
    }
    assert by_kind(docs, "ServiceMonitor") == by_kind(docs, "PrometheusRule") == []
    assert len(by_kind(docs, "NetworkPolicy")) == 2, "NetworkPolicy is on by default"


def test_embedded_mode_is_one_statefulset_with_a_volume_claim(chart) -> None:
    docs = render(chart, OPTION_SETS["embedded"])
    assert by_kind(docs, "Deployment") == [] and by_kind(docs, "HorizontalPodAutoscaler") == []
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["args"][:4] == ["run", "-c", "/etc/tracepipe/tracepipe.yaml", "--data-dir"]
    assert {"name": "data", "mountPath": c["args"][4]} in c["volumeMounts"]
    cfg = rendered_config(docs)
    assert cfg["transport"]["type"] == "memory"
    assert sts["spec"]["serviceName"] == "tp-tracepipe-headless"


def test_keda_scaled_object_scales_workers_on_consumer_lag(chart) -> None:
    docs = render(chart, OPTION_SETS["distributed-keda"])
    (so,) = by_kind(docs, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == "tp-tracepipe-worker"
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == rendered_config(docs)["transport"]["kafka"]["group_id"]
    assert "replicas" not in one(docs, "Deployment", "tp-tracepipe-worker")["spec"]
    with pytest.raises(helm.HelmError, match="enable one"):
        render(chart, {"worker": {"keda": {"enabled": True}, "autoscaling": {"enabled": True}}})


# --- config and secrets -------------------------------------------------------------------


@pytest.mark.parametrize("option_set", sorted(OPTION_SETS))
def test_rendered_config_is_valid_for_tracepipe(chart, option_set: str, pod_files) -> None:
    docs = render(chart, OPTION_SETS[option_set])
    raw = rendered_config(docs)
    cfg = build_config(localize(raw, pod_files), source=f"chart:{option_set}", env=POD_ENV)
    assert cfg.auth is not None and cfg.tokens, "auth is on in every documented option set"
    assert cfg.service.api.endpoint == "0.0.0.0:8081"
    assert cfg.service.metrics.endpoint == "0.0.0.0:9464"
    otlp = cfg.receivers["otlp"].config
    assert (otlp.grpc.endpoint, otlp.http.endpoint) == ("0.0.0.0:4317", "0.0.0.0:4318")
    # Every ${VAR} the config uses without a default is set in every tracepipe container.
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", json.dumps(raw)))
    for c in containers(docs):
        assert used <= {e["name"] for e in c["env"]}, (c["name"], used)


def test_workers_are_static_members_named_after_their_pod(chart, pod_files) -> None:
    def instance_env(values: dict[str, Any]) -> dict[str, list[Any]]:
        return {c["name"]: [e for e in c["env"] if e["name"] == "TRACEPIPE_GROUP_INSTANCE_ID"]
                for c in containers(render(chart, values))}

    on = instance_env({})
    assert on["worker"] == [{"name": "TRACEPIPE_GROUP_INSTANCE_ID",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    assert on["receiver"] == []
    assert instance_env({"worker": {"staticMembership": False}})["worker"] == []
    cfg = build_config(localize(rendered_config(render(chart, {})), pod_files), source="chart",
                       env={**POD_ENV, "TRACEPIPE_GROUP_INSTANCE_ID": "tracepipe-worker-7d9f-abcde"})
    k = cfg.transport.kafka
    assert k.group_instance_id == "tracepipe-worker-7d9f-abcde"
    assert k.stop_timeout < 60  # below the worker's terminationGracePeriodSeconds
    assert build_config(localize(rendered_config(render(chart, {})), pod_files), source="chart",
                        env=POD_ENV).transport.kafka \
        .group_instance_id is None  # the receiver: no id, dynamic (it does not consume anyway)


def test_bad_component_config_in_values_fails_tracepipe_validation(chart, pod_files) -> None:
    docs = render(chart, {"config": {"processors": {"cost": {"no_such_option": 1}}}})
    with pytest.raises(ConfigError, match=r"processors\.cost"):
        build_config(localize(rendered_config(docs), pod_files), env=POD_ENV)


def test_credentials_come_from_existing_secrets_and_are_never_inlined(chart) -> None:
    docs = render(chart, OPTION_SETS["distributed-secrets"])
    assert by_kind(docs, "Secret") == []
    env = {e["name"]: e for e in containers(docs)[0]["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        "KAFKA_SASL_USERNAME": {"name": "tracepipe-kafka", "key": "username"},
        "KAFKA_SASL_PASSWORD": {"name": "tracepipe-kafka", "key": "password"},
        "CLICKHOUSE_PASSWORD": {"name": "tracepipe-clickhouse", "key": "password"},
        "REDIS_URL": {"name": "tracepipe-redis", "key": "url"},
        "SLACK_WEBHOOK_URL": {"name": "tracepipe-webhooks", "key": "slack"},
    }
    # Kubernetes expands $(CLICKHOUSE_PASSWORD), defined before it, into the DSN.
    names = [e["name"] for e in containers(docs)[0]["env"]]
    assert names.index("CLICKHOUSE_PASSWORD") < names.index("CLICKHOUSE_DSN")
    assert env["CLICKHOUSE_DSN"]["value"] == (
        "https://tracepipe:$(CLICKHOUSE_PASSWORD)@clickhouse.analytics.svc:8443/tracepipe"
    )
    security = rendered_config(docs)["transport"]["kafka"]["security"]
    assert security == {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "${KAFKA_SASL_USERNAME}",
        "sasl_password": "${KAFKA_SASL_PASSWORD}",
    }
    image = containers(docs)[0]["image"]
    assert image.endswith("@" + OPTION_SETS["distributed-secrets"]["image"]["digest"])


def test_clickhouse_dsn_can_come_whole_from_a_secret(chart) -> None:
    docs = render(chart, {"secrets": {"clickhouse": {"secretName": "ch", "dsnKey": "dsn"}}})
    env = {e["name"]: e for e in containers(docs)[0]["env"]}
    assert env["CLICKHOUSE_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "ch", "key": "dsn"}
    assert "CLICKHOUSE_PASSWORD" not in env


BAD_VALUES = [
    pytest.param({"mode": "both"}, "/mode", id="unknown-mode"),
    pytest.param({"receiver": {"replicas": 0}}, "/receiver/replicas", id="zero-replicas"),
    pytest.param({"ports": {"api": "8081x"}}, "/ports/api", id="port-not-int"),
    pytest.param({"ports": {"otlpGrpc": 70000}}, "/ports/otlpGrpc", id="port-out-of-range"),
    pytest.param({"secrets": {"clickhouse": {"password": "hunter2"}}}, "/secrets/clickhouse", id="inline-password"),
    pytest.param({"clickhouse": {"url": "http://user:pw@clickhouse:8123/db"}}, "/clickhouse/url", id="dsn-credentials"),
    pytest.param({"kafka": {"sasl": {"mechanism": "MD5"}}}, "/kafka/sasl/mechanism", id="sasl-mechanism"),
    pytest.param({"config": {"transport": {"type": "rabbitmq"}}}, "/config/transport/type", id="transport-type"),
    pytest.param({"config": {"exporters": {}}}, "/config", id="unknown-config-section"),
    pytest.param({"config": {"processors": {"Bad Id": {}}}}, "Bad Id", id="component-id"),
    pytest.param(
        {"config": {"service": {"pipelines": {"p": {"processors": ["cost"]}}}}},
        "/config/service/pipelines/p",
        id="pipeline-without-sinks",
    ),
    pytest.param({"embedded": {"persistence": {"size": "lots"}}}, "/embedded/persistence/size", id="pvc-size"),
    pytest.param({"serviceMonitor": {"interval": "often"}}, "/serviceMonitor/interval", id="scrape-interval"),
    pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="digest"),
    pytest.param(
        {"receiver": {"resources": {"limits": {"cpu": "two"}}}},
        "/receiver/resources/limits/cpu",
        id="resource-quantity",
    ),
    pytest.param(
        {"secrets": {"webhooks": [{"name": "SLACK", "secretName": "s"}]}},
        "/secrets/webhooks/0",
        id="webhook-without-key",
    ),
    pytest.param({"tolerations": []}, "tolerations", id="unknown-top-level-key"),
    pytest.param({"auth": {"tokens": [{"sha256": "0" * 64}]}}, "/auth", id="inline-tokens"),
    pytest.param({"tls": {"minVersion": "1.1"}}, "/tls/minVersion", id="tls-version"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES)
def test_values_schema_rejects_bad_values(chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name="tp", namespace="observability", is_install=True)
    assert "schema" in str(err.value) and where in str(err.value), str(err.value)


@pytest.mark.parametrize("option_set", sorted(OPTION_SETS))
def test_values_schema_accepts_every_documented_option_set(chart, option_set: str) -> None:
    chart.validate_schema(chart.merge_values(OPTION_SETS[option_set]))


# --- monitoring objects -------------------------------------------------------------------


def test_prometheus_rule_embeds_the_rule_files_with_alert_labels(chart, tmp_path: Path) -> None:
    docs = render(chart, OPTION_SETS["distributed-monitoring"])
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rule["spec"]["groups"]
    files = [yaml.safe_load((CHART / "rules" / f).read_text())["groups"] for f in ("recording.yaml", "alerts.yaml")]
    assert [g["name"] for g in groups] == [g["name"] for fg in files for g in fg]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert alerts and all(r["labels"]["team"] == "ai-platform" and r["labels"]["severity"] for r in alerts)
    # The embedded rules are still valid Prometheus rules ({{ $labels }} templates intact).
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    promtool = require_binary("promtool")
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_service_monitor_scrapes_the_metrics_port_of_every_component(chart) -> None:
    for option_set in ("embedded", "distributed-monitoring"):
        docs = render(chart, OPTION_SETS[option_set])
        (sm,) = by_kind(docs, "ServiceMonitor")
        selector = sm["spec"]["selector"]["matchLabels"]
        scraped = [
            s
            for s in by_kind(docs, "Service")
            if selector.items() <= s["metadata"]["labels"].items()
            and any(p["name"] == "metrics" for p in s["spec"]["ports"])
        ]
        components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped}
        assert components == ({"embedded"} if option_set == "embedded" else {"receiver", "worker"})
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"


def test_dashboards_config_map_carries_every_dashboard_with_the_sidecar_label(chart) -> None:
    docs = render(chart, OPTION_SETS["distributed-monitoring"])
    cm = one(docs, "ConfigMap", "tp-tracepipe-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == files and len(files) >= 3
    for name in files:
        assert json.loads(cm["data"][name]) == json.loads((CHART / "dashboards" / name).read_text())
    assert by_kind(render(chart, {"grafanaDashboards": {"enabled": False}}), "ConfigMap") != []
    assert "tp-tracepipe-dashboards" not in {
        d["metadata"]["name"] for d in render(chart, {"grafanaDashboards": {"enabled": False}})
    }


def test_network_policy_limits_ingress_to_the_declared_peers(chart) -> None:
    docs = render(chart, OPTION_SETS["distributed-monitoring"])
    policies = {d["metadata"]["name"]: d for d in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"tp-tracepipe-receiver", "tp-tracepipe-worker"}
    recv = policies["tp-tracepipe-receiver"]["spec"]
    otlp_rule = recv["ingress"][0]
    assert {p["port"] for p in otlp_rule["ports"]} == {4317, 4318}
    assert otlp_rule["from"][0]["namespaceSelector"]["matchLabels"] == {"tracepipe.io/send-telemetry": "true"}
    worker = policies["tp-tracepipe-worker"]["spec"]
    assert [{p["port"] for p in r["ports"]} for r in worker["ingress"]] == [{8081}, {9464}]
    assert recv["policyTypes"] == ["Ingress", "Egress"]
    assert {p["port"] for p in recv["egress"][0]["ports"]} == {53}


def test_default_image_is_the_repository_dockerfile_non_root_with_the_tracepipe_entry_point(chart) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^tracepipe = "pipeline\.cli:main"$', pyproject, re.M)
    assert re.search(r'^ENTRYPOINT \["tracepipe"\]$', dockerfile, re.M)
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", dockerfile, re.M)
    values = chart.values
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user and int(user.group(1)) == values["podSecurityContext"]["runAsUser"] != 0
    exposed = {int(p) for p in re.search(r"^EXPOSE ([\d ]+)$", dockerfile, re.M).group(1).split()}
    assert exposed == set(values["ports"].values())
    assert values["image"]["repository"] in (CHART / "README.md").read_text()
    assert "WORKDIR /var/lib/tracepipe" in dockerfile
    # The default command runs the shipped container config, which binds 0.0.0.0 only with auth.
    assert re.search(r'^CMD \["run", "-c", "/etc/tracepipe/container.yaml"\]$', dockerfile, re.M)
    assert "COPY config/container.yaml" in dockerfile
    assert "tokens_file:" in (ROOT / "config" / "container.yaml").read_text()


# --- auth, TLS, network policy ------------------------------------------------------------


def test_auth_is_on_by_default_with_tokens_from_a_secret_the_chart_never_holds(chart) -> None:
    for option_set in ("default", "embedded"):
        docs = render(chart, OPTION_SETS[option_set])
        assert by_kind(docs, "Secret") == []
        cfg = rendered_config(docs)
        assert cfg["auth"] == {"tokens_file": "/etc/tracepipe-auth/tokens.yaml"}
        assert "sha256" not in json.dumps(docs)
        for d in [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]:
            pod = d["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes["auth"]["secret"]["secretName"] == "tp-tracepipe-tokens"
            (c,) = pod["containers"]
            assert {"name": "auth", "mountPath": "/etc/tracepipe-auth", "readOnly": True} in c["volumeMounts"]
    named = rendered_config(render(chart, {"auth": {"existingSecret": "mine", "tokensKey": "t.yaml"}}))
    assert named["auth"]["tokens_file"] == "/etc/tracepipe-auth/t.yaml"


def test_turning_auth_off_needs_an_explicit_allow_unauthenticated(chart, pod_files) -> None:
    with pytest.raises(helm.HelmError, match="allowUnauthenticated"):
        render(chart, {"auth": {"enabled": False}})
    docs = render(chart, {"auth": {"enabled": False, "allowUnauthenticated": True}})
    raw = rendered_config(docs)
    assert "auth" not in raw
    assert raw["receivers"]["otlp"]["grpc"]["allow_unauthenticated"] is True
    assert raw["service"]["api"]["allow_unauthenticated"] is True
    cfg = build_config(localize(raw, pod_files), env=POD_ENV)
    assert cfg.auth is None


def test_tls_values_put_certificates_from_the_secret_on_every_listener(chart, pod_files) -> None:
    docs = render(chart, OPTION_SETS["distributed-tls"])
    raw = rendered_config(docs)
    otlp = raw["receivers"]["otlp"]
    assert otlp["grpc"]["tls"]["client_ca_file"] == "/etc/tracepipe-tls/ca.crt"
    assert otlp["grpc"]["tls"]["min_version"] == "1.2"  # gRPC cannot refuse TLS 1.2
    assert otlp["http"]["tls"]["min_version"] == "1.3" and otlp["http"]["tls"]["reload_interval"] == 300
    assert "client_ca_file" not in raw["service"]["api"]["tls"]
    assert raw["service"]["metrics"]["auth"] is True and "tls" in raw["service"]["metrics"]
    cfg = build_config(localize(raw, pod_files), env=POD_ENV)
    assert cfg.receivers["otlp"].config.http.tls.client_ca_file.endswith("/tls/ca.crt")
    receiver = one(docs, "Deployment", "tp-tracepipe-receiver")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in receiver["volumes"]}["tls"]["secret"]["secretName"] == "tracepipe-tls"
    assert receiver["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (sm,) = by_kind(docs, "ServiceMonitor")
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["bearerTokenSecret"] == {"name": "tracepipe-prometheus-token", "key": "token"}
    with pytest.raises(helm.HelmError, match="secretName"):
        render(chart, {"tls": {"enabled": True}})


def test_default_network_policy_opens_only_otlp_api_and_metrics_from_monitoring(chart) -> None:
    docs = render(chart)
    recv = one(docs, "NetworkPolicy", "tp-tracepipe-receiver")["spec"]
    ports = [{p["port"] for p in r["ports"]} for r in recv["ingress"]]
    assert ports == [{4317, 4318}, {8081}, {9464}]
    assert recv["ingress"][2]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    worker = one(docs, "NetworkPolicy", "tp-tracepipe-worker")["spec"]
    assert [{p["port"] for p in r["ports"]} for r in worker["ingress"]] == [{8081}, {9464}]
