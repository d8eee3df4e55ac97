"""Distributed mode: the receiver role sends OTLP logs to the Kafka topic `otlp_logs` as
ExportLogsServiceRequest protobuf, one message per trace keyed by the trace id (the OTel
Collector kafka exporter's otlp_proto encoding), and acknowledges only after Kafka did."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline.config import build_config
from pipeline.receiver_runtime import ReceiverRuntime
from pipeline.transport.kafka_logs import split_logs_by_trace
from tests.distributed_helpers import TANSU_KAFKA_SETTINGS
from tests.services import RunningService, start_service
from tests.test_otlp_logs_metrics import _trace_id, logs_request


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


async def _read_topic(url: str, topic: str, expected: int) -> list[tuple[bytes | None, bytes]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def test_split_logs_by_trace_keeps_wrappers_and_groups_by_trace() -> None:
    req = logs_request(1, 1, "a", n=2)
    other = logs_request(2, 3, "b")
    req.resource_logs[0].scope_logs[0].log_records.extend(other.resource_logs[0].scope_logs[0].log_records)
    req.resource_logs[0].scope_logs[0].log_records.add(time_unix_nano=5)  # no trace id
    parts = {key: ExportLogsServiceRequest.FromString(value) for key, value in split_logs_by_trace(req)}
    assert set(parts) == {_trace_id(1).hex().encode(), _trace_id(2).hex().encode(), None}
    one = parts[_trace_id(1).hex().encode()]
    assert len(one.resource_logs[0].scope_logs[0].log_records) == 2
    assert one.resource_logs[0].resource == req.resource_logs[0].resource
    assert one.resource_logs[0].scope_logs[0].scope.name == "opentelemetry.instrumentation.openai_v2"


async def test_receiver_role_sends_logs_to_the_otlp_logs_topic_keyed_by_trace(kafka: RunningService,
                                                                              tmp_path) -> None:
    cfg = build_config({
        "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}},
        "transport": {"type": "kafka", "kafka": {**TANSU_KAFKA_SETTINGS, "brokers": kafka.url, "partitions": 2,
                                                 "topic": "logs_test_spans"}},
        "sinks": {"clickhouse": {}},
        "service": {"data_dir": str(tmp_path), "api": {"endpoint": None}, "metrics": {"endpoint": None},
                    "pipelines": {"traces": {"sinks": ["clickhouse"]}}},
    })
    assert cfg.transport.kafka.logs_topic == "otlp_logs"
    rt = ReceiverRuntime(cfg)
    ep = await rt.start()
    try:
        body = logs_request(21, 1, "via http").SerializeToString()
        async with aiohttp.ClientSession() as s, s.post(
            f"http://{ep.otlp_http}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as r:
            assert r.status == 200
        async with grpc.aio.insecure_channel(ep.otlp_grpc) as ch:
            await logs_service_pb2_grpc.LogsServiceStub(ch).Export(logs_request(22, 1, "via grpc", n=2))
    finally:
        await rt.stop()
    messages = await _read_topic(kafka.url, "otlp_logs", 2)
    by_key = {key: ExportLogsServiceRequest.FromString(value) for key, value in messages}
    assert set(by_key) == {_trace_id(21).hex().encode(), _trace_id(22).hex().encode()}
    grpc_msg = by_key[_trace_id(22).hex().encode()]
    assert len(grpc_msg.resource_logs[0].scope_logs[0].log_records) == 2
    assert grpc_msg.resource_logs[0].scope_logs[0].log_records[0].body.kvlist_value.values[0].value.string_value \
        == "via grpc"


def test_worker_stores_logs_from_the_topic_redacted_and_shows_them_with_their_span(kafka: RunningService,
                                                                                   tmp_path) -> None:
    import urllib.request

    import yaml

    from tests.distributed_helpers import role_env, start_role, wait_for, write_config
    from tests.test_otlp_logs_metrics import SECRET, span_request

    path = write_config(tmp_path, topic="logs_e2e_spans", group="logs-e2e",
                        kafka={"logs_topic": "logs_e2e_logs", "partitions": 2})
    raw = yaml.safe_load(path.read_text())
    # The shipped config already redacts first; add the planted rule to its redact processor.
    raw["processors"]["redact"] = {**(raw["processors"].get("redact") or {}),
                                   "custom_rules": [{"id": "planted", "regex": "SECRET-[0-9]{6}"}]}
    if "redact" not in raw["service"]["pipelines"]["traces"]["processors"]:
        raw["service"]["pipelines"]["traces"]["processors"].insert(0, "redact")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    worker = start_role("worker", path, env, tmp_path / "worker.log")
    receiver = start_role("receiver", path, env, tmp_path / "receiver.log")
    try:
        def post(kind: str, body: bytes) -> int:
            req = urllib.request.Request(f"{receiver.otlp_http}/v1/{kind}", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status

        # the log event first, its span after: both orders meet at query time
        assert post("logs", logs_request(31, 4, f"the key is {SECRET}", event="gen_ai.user.message")
                    .SerializeToString()) == 200
        assert post("traces", span_request(31, 4).SerializeToString()) == 200
        tid = _trace_id(31).hex()

        def shown() -> dict | None:
            status, body = worker.get(f"/api/traces/{tid}")
            return body if status == 200 and body["spans"][0].get("logs") else None

        trace = wait_for(shown, 60, "the log event with its span on the worker")
        (rec,) = trace["spans"][0]["logs"]
        assert rec["event_name"] == "gen_ai.user.message"
        assert SECRET not in rec["body"] and "[REDACTED:planted:" in rec["body"]
    finally:
        receiver.stop()
        worker.stop()
