"""Distributed mode end to end, with real processes and a real Kafka-protocol broker (Tansu).

OTel SDK -> `tracepipe receiver` -> Kafka -> `tracepipe worker` -> chDB, and a collector's
kafka exporter (multi-trace, unkeyed otlp_proto messages) straight onto the topic. Both
collector recipes come from config/collector-forwarding.yaml, the file the README shows.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from bench.workload import make_request, spans_in
from pipeline.transport.kafka_partitioner import murmur2
from tests.distributed_helpers import ROOT, create_topic, read_rows, role_env, start_role, wait_for, write_config
from tests.pipeline_proc import cli
from tests.services import RunningService, start_service

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=45)

RECIPES = list(yaml.safe_load_all((ROOT / "config" / "collector-forwarding.yaml").read_text()))


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def _recipe_exporter(prefix: str) -> dict:
    (recipe,) = [r for r in RECIPES if any(k.split("/")[0] == prefix for k in r["exporters"])]
    (name,) = [k for k in recipe["exporters"] if k.split("/")[0] == prefix]
    assert name in recipe["service"]["pipelines"]["traces"]["exporters"]
    return recipe["exporters"][name]


async def _read_topic(url: str, topic: str, expected: int) -> list[tuple[int, bytes | None, bytes]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend((r.partition, r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def test_otel_sdk_to_receiver_to_kafka_to_worker_stores_every_span_with_parent_links(
    kafka: RunningService, tmp_path: Path
) -> None:
    exporter_cfg = _recipe_exporter("otlp")
    assert exporter_cfg["endpoint"].endswith(":4317") and exporter_cfg["tls"]["insecure"] is True
    cfg = write_config(tmp_path, topic="sdk_spans", group="sdk-workers")
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    worker = start_role("worker", cfg, env, tmp_path / "worker.log")
    receiver = start_role("receiver", cfg, env, tmp_path / "receiver.log")
    try:
        # the collector's otlp exporter is, for tracepipe, an OTLP/gRPC client like this one
        exporter = OTLPSpanExporter(endpoint=receiver.otlp_grpc, insecure=exporter_cfg["tls"]["insecure"],
                                    compression=None)
        provider = TracerProvider(resource=Resource.create({"service.name": "dist-e2e"}))
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=50))
        tracer = provider.get_tracer("e2e")
        sent = 0
        for i in range(40):
            with tracer.start_as_current_span("request", kind=SpanKind.SERVER, attributes={"user.id": f"u{i % 3}"}):
                with tracer.start_as_current_span("retrieval"):
                    sent += 1
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes={
                        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}):
                    sent += 1
                sent += 1
        assert provider.force_flush(30_000)
        provider.shutdown()
        wait_for(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= sent, 60,
                 "the worker to store every span")
        # a request's traces bound for one partition share a message, keyed by one of them; every
        # trace is on the partition its id hashes to as a key, so a trace lives on one partition
        # (the SDK may export one trace in two requests: two messages, same partition)
        produced = int(receiver.metric("tracepipe_kafka_produced_messages_total", topic="sdk_spans"))
        messages = asyncio.run(_read_topic(kafka.url, "sdk_spans", produced))
        assert len(messages) == produced >= 1
        partitions_of: dict[str, set[int]] = defaultdict(set)
        n_partitions = 4  # write_config's default
        for partition, key, value in messages:
            req = ExportTraceServiceRequest.FromString(value)
            tids = {sp.trace_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans}
            assert key is not None and key.decode() in tids
            for tid in tids:
                assert (murmur2(tid.encode()) & 0x7FFFFFFF) % n_partitions == partition
                partitions_of[tid].add(partition)
        assert len(partitions_of) == 40 and all(len(p) == 1 for p in partitions_of.values())
        assert produced < 40  # packed: fewer messages than traces
        # operations: self-metrics and probes of both roles
        assert receiver.metric("tracepipe_kafka_produce_duration_seconds_count") >= 1
        assert worker.metric("tracepipe_kafka_commits_total", outcome="ok") >= 1
        assert "tracepipe_kafka_consumer_lag_messages{" in worker.metrics()
        assert "tracepipe_worker_batches_in_flight" in worker.metrics()
        # the query commands work with the distributed config, asking the running worker
        tid = next(iter(partitions_of))
        out = cli("traces", "show", tid, "-c", str(cfg), "--api", f"127.0.0.1:{worker.api_port}", "--json")
        assert out.returncode == 0, out.stderr
        assert tid in out.stdout and "chat gpt-4o-mini" in out.stdout
        out = cli("cost", "-c", str(cfg), "--api", f"127.0.0.1:{worker.api_port}", "--by", "model", "--json",
                  "--since", "1h")
        assert out.returncode == 0 and "gpt-4o-mini" in out.stdout, out.stderr
        for role in (receiver, worker):
            assert role.get("/healthz")[0] == 200
            status, body = role.get("/readyz")
            assert status == 200 and body["checks"]["kafka"]["ok"] is True
    finally:
        receiver.stop()
        assert worker.stop() == 0
    rows = read_rows(tmp_path / "ch")
    assert len(rows) == sent
    assert len({(t, s) for t, s, _, _ in rows}) == sent
    ids_by_trace: dict[str, set[str]] = defaultdict(set)
    for t, s, _, _ in rows:
        ids_by_trace[t].add(s)
    roots = [r for r in rows if r[2] == ""]
    assert len(roots) == 40
    assert all(p in ids_by_trace[t] for t, _, p, _ in rows if p)


async def _produce_like_collector_kafka_exporter(url: str, topic: str, payloads: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    try:
        for value in payloads:
            await (await producer.send(topic, value))  # no key, as the exporter's default
    finally:
        await producer.stop()


def test_collector_kafka_exporter_messages_multi_trace_unkeyed_are_stored(kafka: RunningService,
                                                                          tmp_path: Path) -> None:
    exporter_cfg = _recipe_exporter("kafka")
    topic = exporter_cfg["traces"]["topic"]
    assert exporter_cfg["traces"]["encoding"] == "otlp_proto"
    assert topic == yaml.safe_load((ROOT / "config" / "distributed.yaml").read_text())["transport"]["kafka"]["topic"]
    cfg = write_config(tmp_path, topic=topic, group="collector-workers")
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    worker = start_role("worker", cfg, env, tmp_path / "worker.log")
    try:
        requests = [make_request(12, seed=100 + i, prompt_bytes=100) for i in range(8)]
        sent = sum(spans_in(r) for r in requests)
        payloads = [r.SerializeToString() for r in requests]
        payloads.insert(3, b"\x0a\xff\xff not protobuf")  # a message that does not parse
        asyncio.run(_produce_like_collector_kafka_exporter(kafka.url, topic, payloads))
        wait_for(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= sent, 60,
                 "the worker to store the collector's spans")
        assert worker.metric("tracepipe_kafka_malformed_messages_total", topic=topic) == 1
        assert worker.alive() and worker.get("/healthz")[0] == 200
    finally:
        assert worker.stop() == 0
    rows = read_rows(tmp_path / "ch")
    assert len(rows) == sent == len({(t, s) for t, s, _, _ in rows})
    assert len({t for t, _, _, _ in rows}) == 8 * 12
    assert sum(c or 0 for *_, c in rows) > 0  # the chain (cost) ran on them


def test_receiver_and_worker_refuse_an_embedded_config() -> None:
    for role in ("receiver", "worker"):
        out = cli(role, "-c", str(ROOT / "config" / "embedded.yaml"))
        assert out.returncode == 2 and "transport.type 'memory'" in out.stderr



def _readme_yaml_blocks(section: str) -> list[dict]:
    import re

    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", body, re.S)]


def test_readme_forwarding_snippets_are_the_tested_recipes() -> None:
    blocks = _readme_yaml_blocks("Forwarding from an OpenTelemetry Collector")
    assert len(blocks) == 2
    recipe_exporters = {name: cfg for r in RECIPES for name, cfg in r["exporters"].items()}
    for block in blocks:
        for name, cfg in block["exporters"].items():
            assert recipe_exporters[name] == cfg


def test_readme_kafka_security_snippet_is_a_valid_transport(tmp_path: Path) -> None:
    from pipeline.config import load_config

    (block,) = _readme_yaml_blocks("Distributed mode")
    raw = yaml.safe_load((ROOT / "config" / "distributed.yaml").read_text())
    raw["transport"] = block["transport"]
    path = tmp_path / "secure.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path, env={"KAFKA_BROKERS": "k:9093", "KAFKA_PASSWORD": "pw"})
    sec = cfg.transport.kafka.security
    assert (sec.protocol, sec.sasl_mechanism, sec.sasl_password) == ("SASL_SSL", "SCRAM-SHA-512", "pw")
    from pipeline.transport.kafka_common import security_kwargs

    kwargs = security_kwargs(sec.model_copy(update={"ssl_cafile": None}))
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["sasl_plain_username"] == "tracepipe"
    assert kwargs["security_protocol"] == "SASL_SSL" and "ssl_context" in kwargs


def test_a_backlog_whose_first_take_runs_long_is_delivered_once_without_rereads(kafka: RunningService,
                                                                               tmp_path: Path) -> None:
    """A worker started on a backlog spends seconds in its first take (the first inserts into a new
    chDB: 2.2 s here for 465 messages). What follows waits in Faust's take buffer meanwhile, so
    it is no stall: the worker used to count that time as one and re-read every partition, and
    the rest of the backlog was delivered and decoded twice (4 re-reads in every run before)."""
    from tests.test_distributed_crash import Stream

    topic, group = "backlog_once", "backlog-once"
    asyncio.run(create_topic(kafka.url, topic, 4))
    stream = Stream(kafka.url, topic, pause=0.0, seed=4100, min_requests=300, max_requests=300).start()
    stream.finish(120)
    messages = sum(o + 1 for o in stream.last_offsets.values())
    assert messages == 4 * 300  # one message per trace, four traces per request
    cfg = write_config(tmp_path, topic=topic, group=group, partitions=4)
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    worker = start_role("worker", cfg, env, tmp_path / "worker.log")
    try:
        wait_for(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= stream.sent_spans,
                 90, "the worker to store the backlog")
        rereads = worker.metric("tracepipe_kafka_rereads_total", topic=topic)
        consumed = worker.metric("tracepipe_kafka_consumed_messages_total", topic=topic)
    finally:
        assert worker.stop() == 0
    assert rereads == 0, worker.log()[-3000:]
    assert consumed == messages, f"{consumed:.0f} messages taken for {messages} on the topic"
    rows = read_rows(tmp_path / "ch")
    assert len(rows) == stream.sent_spans == len({(t, s) for t, s, _, _ in rows})
