"""`tracepipe receiver` with the shipped config/distributed.yaml auth section: the ingest token's
tenant is stamped into the request bytes that go to Kafka, whatever the client claimed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.distributed_helpers import SHIPPED_CONFIG, role_env, start_role, write_config
from tests.services import RunningService, start_service
from tests.test_auth_e2e import create_token, result_of, sdk_export


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


async def _read(url: str, topic: str, expected: int) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    out: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return out


def test_receiver_stamps_the_token_tenant_into_kafka_messages(kafka: RunningService, tmp_path: Path) -> None:
    token, lines = create_token("beta", "ingest", "collector")
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text("tokens:\n" + lines + "\n")
    path = write_config(tmp_path, topic="auth_stamp")
    raw = yaml.safe_load(path.read_text())
    raw["auth"] = yaml.safe_load(SHIPPED_CONFIG.read_text())["auth"]  # the shipped section, as is
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**role_env(kafka.url), "TRACEPIPE_TOKENS_FILE": str(tokens_file)}
    receiver = start_role("receiver", path, env, tmp_path / "receiver.log")
    try:
        refused, _ = result_of(sdk_export("http", receiver.otlp_http, None))
        assert refused == "FAILURE"
        outcome, trace_id = result_of(sdk_export("http", receiver.otlp_http, token))
        assert outcome == "SUCCESS"
        (value,) = asyncio.run(_read(kafka.url, "auth_stamp", 1))
    finally:
        receiver.stop()
    req = ExportTraceServiceRequest.FromString(value)
    (rs,) = req.resource_spans
    assert rs.scope_spans[0].spans[0].trace_id.hex() == trace_id
    tenants = [kv.value.string_value for kv in rs.resource.attributes if kv.key == "tenant.id"]
    assert tenants == ["beta"]
    assert all(kv.key != "tenant.id" for kv in rs.scope_spans[0].spans[0].attributes)
    assert token not in receiver.log()
