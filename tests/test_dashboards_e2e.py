"""Every PromQL expression of the Grafana dashboards and recording rules returns data.

A dashboard whose query returns nothing is a broken dashboard. The real pipeline
(`tracepipe run`, subprocess) gets a steady synthetic GenAI workload from the OTel SDK
(several services and models, errors, cache reads, an unpriced model, secrets to redact,
spans over the attribute limit, users over a tiny budget) and a short Redis outage under
its budgets sink; Debian's Prometheus scrapes it every second with the chart's recording
rules and alerting rules (their `for:` removed so alerts fire within seconds). Then every
expression is run against that Prometheus, with Grafana's variables substituted, and must
return at least one sample with a number.

Skipped there, and only these: expressions over metrics that only the distributed runtime
exports (Kafka produce/consume/lag, DISTRIBUTED_ONLY below). They all sit in the dashboards'
"Kafka" row and the Kafka recording group, which a static test here enforces, and
test_kafka_row_queries_return_data_in_distributed_mode runs them against `tracepipe receiver`
+ `tracepipe worker` over the Tansu broker (all but the redelivery counter, which needs a
worker crash).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=29)

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tracepipe"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
RECORDING = CHART / "rules" / "recording.yaml"
ALERTS = CHART / "rules" / "alerts.yaml"

# Metrics only `tracepipe receiver` / `tracepipe worker` export: the embedded pipeline has no
# Kafka, so expressions over them cannot return data from it (the distributed test below runs them).
DISTRIBUTED_ONLY = {
    "tracepipe_kafka_consumer_lag_messages": "worker: consumer lag per partition",
    "topic:tracepipe_kafka_consumer_lag_messages:sum": "recorded from the consumer lag",
    "tracepipe_kafka_produce_duration_seconds_bucket": "receiver: produce latency",
    "tracepipe_kafka_produced_messages_total": "receiver: produced messages",
    "tracepipe_kafka_produce_failures_total": "receiver: produce failures",
    "tracepipe_kafka_in_flight_spans": "receiver: spans awaiting Kafka acks",
    "tracepipe_kafka_consumed_messages_total": "worker: consumed messages",
    "tracepipe_kafka_redelivered_messages_total": "worker: redelivered messages",
    "tracepipe_kafka_malformed_messages_total": "worker: malformed messages",
    "tracepipe_kafka_commits_total": "worker: offset commits",
    "tracepipe_kafka_events_published_total": "worker: alert events published to Kafka",
}
KAFKA_ROW = re.compile(r"^Kafka\b")
# Grafana's variables, as Grafana would expand them for "All" and a 1 s scrape interval.
GRAFANA_VARS = {"$__rate_interval": "15s", "$__range": "5m", "$service": ".*", "$model": ".*", "$operation": ".*"}
PROM_DS_UIDS = {"${datasource}"}
OTHER_DS_UIDS = {"${clickhouse}", "-- Grafana --"}


@dataclass(frozen=True)
class Expr:
    source: str  # dashboard file / rule file
    where: str  # panel title / record name
    row: str
    promql: str

    @property
    def distributed_only(self) -> bool:
        return any(re.search(rf"(?<![\w:]){re.escape(m)}(?![\w:])", self.promql) for m in DISTRIBUTED_ONLY)


def _panels(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            for inner in panel.get("panels", []):
                yield row, inner
            continue
        yield row, panel


def _label_values_to_promql(query: str) -> str:
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert m, f"unsupported variable query {query!r}"
    return f"group by ({m.group(2)}) ({m.group(1)})"


def expressions() -> list[Expr]:
    out: list[Expr] = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for row, panel in _panels(d):
            for t in panel.get("targets", []):
                if "expr" in t:
                    out.append(Expr(path.name, panel["title"], row, t["expr"]))
        for var in d["templating"]["list"]:
            if var["type"] == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append(Expr(path.name, f"variable ${var['name']}", "", _label_values_to_promql(q)))
    for group in yaml.safe_load(RECORDING.read_text())["groups"]:
        for rule in group["rules"]:
            out.append(Expr(RECORDING.name, rule["record"], group["name"], rule["expr"]))
    return out


def substitute(promql: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        promql = promql.replace(var, value)
    assert "$" not in promql.replace("$labels", ""), f"unsubstituted variable in {promql!r}"
    return promql


# --- static checks: fast, no services -------------------------------------------------------


def test_dashboards_take_the_datasource_from_a_variable_and_hard_code_no_uid() -> None:
    assert len(DASHBOARDS) >= 3
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["uid"] not in uids and re.fullmatch(r"[a-z0-9-]{1,40}", d["uid"]), d["uid"]
        uids.add(d["uid"])
        assert "id" not in d or d["id"] is None, f"{path.name}: exported with an install's numeric id"
        ds_vars = {v["name"]: v for v in d["templating"]["list"] if v["type"] == "datasource"}
        assert ds_vars["datasource"]["query"] == "prometheus"
        text = path.read_text()
        for m in re.finditer(r'"uid":\s*"([^"]*)"', text):
            assert m.group(1) in PROM_DS_UIDS | OTHER_DS_UIDS | {d["uid"]}, f"{path.name}: hard-coded uid {m.group(1)}"
        ids = [p["id"] for _, p in _panels(d)] + [p["id"] for p in d["panels"] if p["type"] == "row"]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for _row, panel in _panels(d):
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            for t in panel["targets"]:
                assert t["datasource"]["uid"] in PROM_DS_UIDS | OTHER_DS_UIDS, (path.name, panel["title"])
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (path.name, panel["title"])


def test_dashboards_cover_what_users_asked_for() -> None:
    exprs = " ".join(e.promql for e in expressions())
    for metric in (
        "tracepipe_llm_cost_usd",
        "tracepipe_llm_tokens",
        "tracepipe_llm_calls",
        "tracepipe_span_duration_seconds",
        "tracepipe_receiver_accepted_spans_total",
        "tracepipe_receiver_refused_spans_total",
        "tracepipe_dropped_spans_total",
        "tracepipe_queue_size",
        "tracepipe_sink_write_duration_seconds",
        "tracepipe_kafka_consumer_lag_messages",
        "tracepipe_redactions_total",
        "tracepipe_sampling_traces_total",
        "tracepipe_budget_utilization_ratio",
        "tracepipe_alerts_active",
    ):
        assert metric in exprs, f"no dashboard query over {metric}"
    spend = json.loads((CHART / "dashboards" / "llm-spend.json").read_text())
    sql = [t["rawSql"] for _, p in _panels(spend) for t in p["targets"] if "rawSql" in t]
    assert any("UserId" in q for q in sql) and any("TraceId" in q for q in sql)


def test_skipped_expressions_are_exactly_the_kafka_row_and_kafka_recording_group() -> None:
    for e in expressions():
        in_kafka_part = bool(KAFKA_ROW.match(e.row)) or e.row == "tracepipe.kafka.recording"
        if in_kafka_part:
            assert e.distributed_only, f"{e.source} / {e.where}: a Kafka-row query over embedded metrics"
        else:
            assert not e.distributed_only, f"{e.source} / {e.where}: distributed-only metric outside the Kafka row"
    assert any(e.distributed_only for e in expressions())


# --- end to end -----------------------------------------------------------------------------

SERVICES = ("chat-api", "rag-worker", "support-bot")
MODELS = (  # (provider, model, input, output, cache_read)
    ("openai", "gpt-4o", 1200, 300, 400),
    ("openai", "gpt-4o-mini", 800, 200, 0),
    ("anthropic", "claude-3-5-sonnet-20241022", 1500, 500, 600),
    ("acme", "acme-llm-1", 100, 50, 0),  # unknown to genai-prices: unpriced
)


def e2e_config(redis_url: str, webhook_url: str) -> dict[str, Any]:
    return {
        "alerts": {"webhooks": [{"url": webhook_url, "format": "json", "name": "e2e"}]},
        "receivers": {"otlp": {"max_attributes_per_span": 40}},
        "processors": {
            "normalize": {},
            "cost": {},
            "redact": {},
            "anomaly": {
                "group_by": ["service"],
                "window": {"size": 1.0},
                "allowed_lateness": 0.0,
                "idle_close": 1.0,
                "baseline": {"warmup_windows": 1},
                "rules": [
                    {
                        "name": "e2e_error_rate",
                        "metric": "error_rate",
                        "kind": "absolute",
                        "threshold": 0.05,
                        "min_calls": 1,
                        "resolve_windows": 1000,  # stays active for the whole test
                    },
                    {  # resolves and breaks again within the cooldown: suppressed firings
                        "name": "e2e_error_flap",
                        "metric": "error_rate",
                        "kind": "absolute",
                        "threshold": 0.05,
                        "min_calls": 1,
                    },
                ],
            },
            "sample": {"mode": "tail", "probability": 0.5, "decision_wait": 0.5, "max_traces": 2},
        },
        "sinks": {
            "clickhouse": {},
            "prometheus": {},
            "budgets": {
                "redis": {"url": redis_url, "socket_timeout": 0.5, "connect_timeout": 0.5},
                "unavailable": "block",
                "budgets": {
                    "per_user": {"scope": "user", "period": "day", "limit": {"usd": 0.0001}},
                    "total": {"scope": "global", "period": "day", "limit": {"usd": 10000}},
                },
            },
            # The same budgets in the default mode: buffers increments while Redis is away.
            "budgets/buffered": {
                "redis": {"url": redis_url, "socket_timeout": 0.5, "connect_timeout": 0.5},
                "key_prefix": "tracepipe:budget-buffered",
                "unavailable": "buffer",
                "budgets": {"total": {"scope": "global", "period": "day", "limit": {"usd": 10000}}},
            },
        },
        "transport": {"type": "memory"},
        "service": {
            "retry": {"initial_backoff": 0.1, "max_backoff": 0.5},
            "batch": {"timeout": 0.1},
            "pipelines": {
                "metered": {
                    "processors": ["normalize", "cost", "redact", "anomaly"],
                    "sinks": ["budgets", "budgets/buffered", "prometheus"],
                },
                "stored": {"from": "metered", "processors": ["sample"], "sinks": ["clickhouse"]},
            },
        },
    }


class Workload:
    """Sends GenAI traces through the OTel SDK over OTLP/gRPC until stopped."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        self.providers = {}
        for service in SERVICES:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
            self.providers[service] = provider
        self.rng = random.Random(7)
        self.waves = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for p in self.providers.values():
            p.shutdown()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.wave()
            self._stop.wait(0.3)

    def wave(self) -> None:
        from opentelemetry import trace as trace_api
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.waves += 1
        now = time.time_ns()
        ms = 1_000_000
        for si, service in enumerate(SERVICES):
            tracer = self.providers[service].get_tracer("e2e")
            user = f"user-{self.waves}-{si}"
            root = tracer.start_span(
                "handle_request",
                kind=SpanKind.SERVER,
                start_time=now - 3000 * ms,
                attributes={"user.id": user, "app.feature": "support"},
            )
            ctx = trace_api.set_span_in_context(root)
            for mi, (provider, model, tin, tout, cache) in enumerate(MODELS):
                start = now - (2500 - 400 * mi) * ms
                attrs: dict[str, Any] = {
                    "gen_ai.system": provider,
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": tin,
                    "gen_ai.usage.output_tokens": tout,
                    "user.id": user,
                }
                if cache:
                    attrs["gen_ai.usage.cache_read.input_tokens"] = cache
                if mi == 0:  # a leaked key in a prompt, for the redact processor
                    attrs["gen_ai.prompt"] = "use key sk-proj-" + "a1B2c3D4e5F6g7H8i9J0" * 2 + " please"
                span = tracer.start_span(
                    f"llm {model}", context=ctx, kind=SpanKind.CLIENT, start_time=start, attributes=attrs
                )
                if mi == 1 and (self.waves + si) % 3 == 0:
                    span.set_status(Status(StatusCode.ERROR, "rate limited"))
                span.end(end_time=start + self.rng.randint(50, 2000) * ms)
            tool = tracer.start_span("vector_search", context=ctx, start_time=now - 600 * ms)
            tool.end(end_time=now - 500 * ms)
            if si == 0:  # over the receiver's attribute limit: refused (invalid) and dropped
                bad = tracer.start_span(
                    "too_many_attributes",
                    context=ctx,
                    start_time=now - 100 * ms,
                    attributes={f"attr.{i}": i for i in range(60)},
                )
                bad.end(end_time=now - 50 * ms)
            root.end(end_time=now)


class WebhookReceiver:
    """A local HTTP endpoint for the alert webhook notifier: answers 200 and counts POSTs."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    from tests.pipeline_proc import start_pipeline
    from tests.services.prometheus import query, start_local_prometheus
    from tests.services.redis import start_local_redis

    tmp = tmp_path_factory.mktemp("dash-e2e")
    redis = start_local_redis()
    hook = WebhookReceiver()
    config = tmp / "tracepipe.yaml"
    config.write_text(yaml.safe_dump(e2e_config(redis.url, hook.url)))
    # The alerting rules as shipped, minus `for:`, so alerts fire within seconds.
    alerts = yaml.safe_load(ALERTS.read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    fast_alerts = tmp / "alerts-no-for.yaml"
    fast_alerts.write_text(yaml.safe_dump(alerts))
    pipeline = start_pipeline(tmp / "data", "-c", str(config))
    prom = None
    workload = None
    try:
        prom = start_local_prometheus(
            [f"127.0.0.1:{pipeline.metrics_port}"],
            [RECORDING, fast_alerts],
            workdir=str(tmp_path_factory.mktemp("prom")),
        )
        workload = Workload(pipeline.otlp_grpc)
        workload.start()
        port = pipeline.metrics_port
        _wait(
            lambda: _sample(_scrape(port), "tracepipe_sink_sent_spans_total", sink="budgets") > 0,
            60,
            "the budgets sink to write",
        )
        # A short Redis outage: the budgets sink fails, the chain retries, then it recovers.
        redis.stop()
        _wait(
            lambda: _sample(_scrape(port), "tracepipe_sink_send_failed_spans_total", sink="budgets") > 0,
            60,
            "budgets sink failures during the Redis outage",
        )
        # ... long enough for Prometheus to see the failure counter grow, not just appear.
        _wait(
            lambda: query(prom, 'sum(rate(tracepipe_sink_send_failed_spans_total{sink="budgets"}[1m])) > 0'),
            60,
            "Prometheus to see the budgets sink failing",
        )
        redis = start_local_redis(port=redis.port, workdir=redis.workdir)
        sent = _sample(_scrape(port), "tracepipe_sink_sent_spans_total", sink="budgets")
        _wait(
            lambda: _sample(_scrape(port), "tracepipe_sink_sent_spans_total", sink="budgets") > sent,
            60,
            "the budgets sink to recover",
        )
        yield pipeline, prom, workload
    finally:
        if workload is not None:
            workload.stop()
        if prom is not None:
            prom.stop()
        pipeline.stop()
        redis.stop()
        hook.close()


def _wait_for_data(prom, exprs: list[Expr], timeout: float) -> dict[Expr, str]:
    from tests.services.prometheus import query

    pending = {e: substitute(e.promql) for e in exprs}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for e, q in list(pending.items()):
            if _has_number(query(prom, q)):
                del pending[e]
        if pending:
            time.sleep(1)
    return pending


def _has_number(result: list[dict[str, Any]]) -> bool:
    for r in result:
        values = [r["value"]] if "value" in r else r.get("values", [])
        if any(not math.isnan(float(v[1])) for v in values):
            return True
    return False


def test_every_dashboard_and_recording_rule_query_returns_data(stack) -> None:
    pipeline, prom, _ = stack
    wanted = [e for e in expressions() if not e.distributed_only]
    assert len(wanted) > 50
    pending = _wait_for_data(prom, wanted, timeout=120)
    broken = "\n".join(f"  {e.source} / {e.where}: {q}" for e, q in pending.items())
    assert not pending, f"queries returning no data (broken dashboards):\n{broken}\n{pipeline.log()[-2000:]}"


def test_shipped_alerts_fire_on_the_workload(stack) -> None:
    from tests.services.prometheus import query

    _, prom, _ = stack
    firing: set[str] = set()
    deadline = time.monotonic() + 60
    wanted = {"TracepipeBudgetOverLimit", "TracepipeSinkErrors", "TracepipeSpansRefused", "TracepipeSpansDropped"}
    while time.monotonic() < deadline and not wanted <= firing:
        firing = {r["metric"]["alertname"] for r in query(prom, 'ALERTS{alertstate="firing"}')}
        time.sleep(0.5)
    assert wanted <= firing, firing


def test_clickhouse_panels_run_on_the_stored_spans(stack) -> None:
    """The ClickHouse panels' SQL, run on the chDB data the pipeline wrote (after it stopped)."""
    import subprocess
    import sys

    pipeline, _, workload = stack
    workload.stop()
    assert pipeline.stop() == 0, pipeline.log()[-2000:]
    spend = json.loads((CHART / "dashboards" / "llm-spend.json").read_text())
    queries = [t["rawSql"] for _, p in _panels(spend) for t in p["targets"] if "rawSql" in t]
    assert queries
    sql = [re.sub(r"\$__timeFilter\((\w+)\)", r"\1 >= now() - INTERVAL 1 DAY", q) for q in queries]
    script = (
        "import json, sys\n"
        "from pipeline.query.store import open_client\n"
        "client = open_client(sys.argv[1])\n"
        "rows = [[list(map(str, r)) for r in client.query(q).result_rows] for q in json.loads(sys.argv[2])]\n"
        "print(json.dumps(rows))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, f"chdb://{pipeline.data_dir / 'clickhouse'}", json.dumps(sql)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for q, rows in zip(queries, results, strict=True):
        assert rows, f"no rows: {q}"
    top_users = results[0]
    assert all(r[0].startswith("user-") for r in top_users)
    assert [float(r[1]) for r in top_users] == sorted((float(r[1]) for r in top_users), reverse=True)


# --- the Kafka row, against the distributed runtime ------------------------------------------

# Kafka-row expressions that need a worker crash or rebalance to have data
# (tests/test_distributed_crash.py exercises that path).
NEEDS_WORKER_CRASH = ("tracepipe_kafka_redelivered_messages_total",)


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory):
    from tests.distributed_helpers import TANSU_KAFKA_SETTINGS, role_env, start_role, write_config
    from tests.services.kafka import start_local_kafka
    from tests.services.prometheus import start_local_prometheus

    tmp = tmp_path_factory.mktemp("dash-dist")
    kafka = start_local_kafka()
    roles = []
    prom = workload = None
    try:
        worker_options = {**TANSU_KAFKA_SETTINGS["worker_options"], "datadir": str(tmp / "faust")}
        cfg = write_config(
            tmp,
            topic="dash_spans",
            group="dash-workers",
            partitions=2,
            kafka={"max_in_flight_spans": 40, "worker_options": worker_options},
        )
        # An anomaly rule that fires at once, so the worker publishes alert events to Kafka.
        raw = yaml.safe_load(cfg.read_text())
        raw["processors"]["anomaly"] = e2e_config("redis://unused", "http://unused")["processors"]["anomaly"]
        raw["service"]["pipelines"]["traces"]["processors"].append("anomaly")
        cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        env = role_env(kafka.url, chdb_dir=tmp / "ch", data_dir=tmp / "data")
        roles.append(start_role("worker", cfg, env, tmp / "worker.log"))
        roles.append(start_role("receiver", cfg, env, tmp / "receiver.log"))
        worker, receiver = roles
        prom = start_local_prometheus(
            [f"127.0.0.1:{worker.metrics_port}", f"127.0.0.1:{receiver.metrics_port}"],
            [RECORDING],
            workdir=str(tmp_path_factory.mktemp("dist-prom")),
        )
        workload = Workload(receiver.otlp_grpc)
        workload.start()
        _send_too_large_request(receiver.otlp_grpc, spans=60)
        _produce_garbage(kafka.url, "dash_spans")
        yield worker, receiver, prom
    finally:
        if workload is not None:
            workload.stop()
        if prom is not None:
            prom.stop()
        for role in reversed(roles):
            role.stop()
        kafka.stop()


def _send_too_large_request(endpoint: str, spans: int) -> None:
    """One export request with more spans than the receiver may have in flight: refused, too_large."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bulk-import"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True), max_export_batch_size=512)
    )
    tracer = provider.get_tracer("e2e")
    for i in range(spans):
        tracer.start_span(f"bulk {i}").end()
    provider.force_flush()
    provider.shutdown()


def _produce_garbage(url: str, topic: str) -> None:
    """A message that is not an OTLP ExportTraceServiceRequest: the worker skips and counts it."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=url, enable_idempotence=False, linger_ms=0)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"\xff\x00 not protobuf \xff", key=b"garbage")
        finally:
            await producer.stop()

    asyncio.run(send())


def test_kafka_row_queries_return_data_in_distributed_mode(distributed) -> None:
    worker, receiver, prom = distributed
    wanted = [e for e in expressions() if e.distributed_only and not any(m in e.promql for m in NEEDS_WORKER_CRASH)]
    assert len(wanted) >= 8
    pending = _wait_for_data(prom, wanted, timeout=120)
    broken = "\n".join(f"  {e.source} / {e.where}: {q}" for e, q in pending.items())
    assert not pending, (
        f"Kafka-row queries returning no data:\n{broken}\n{worker.log()[-1500:]}\n{receiver.log()[-1500:]}"
    )
