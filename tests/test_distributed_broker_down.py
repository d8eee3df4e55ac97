"""The broker goes away: receivers answer with retryable OTLP codes, never buffer without
bound, and everything the clients retried is stored once the broker is back.

Tansu keeps its data in memory, so the restarted broker is empty and its topic is recreated
by the test (a real cluster keeps its topics and data; that is a Tansu limit, not product
behaviour). The worker starts after the broker returned.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request, spans_in
from tests.distributed_helpers import create_topic, read_rows, role_env, start_role, wait_for, write_config
from tests.services.kafka import start_local_kafka

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=18)

RETRYABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _post(url: str, body: bytes) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_broker_down_gets_retryable_answers_and_retried_data_is_stored(tmp_path: Path) -> None:
    broker = start_local_kafka()
    topic = "down_spans"
    cfg = write_config(tmp_path, topic=topic, group="down-workers", partitions=2)
    env = role_env(broker.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    receiver = start_role("receiver", cfg, env, tmp_path / "receiver.log")
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(receiver.otlp_grpc))
    pending: list[ExportTraceServiceRequest] = [make_request(5, seed=700 + i, prompt_bytes=50) for i in range(6)]
    worker = None
    try:
        broker.stop()  # the broker goes away
        # gRPC: UNAVAILABLE (or RESOURCE_EXHAUSTED), within the produce timeout, never success
        t0 = time.monotonic()
        codes = []
        for req in pending[:4]:
            try:
                stub.Export(req, timeout=15)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert set(codes) <= RETRYABLE_GRPC, codes
        assert time.monotonic() - t0 < 12  # answered within produce_timeout (3 s) + fail-fast, no hang
        # HTTP: 503/429 with Retry-After
        for req in pending[4:]:
            status, headers = _post(f"{receiver.otlp_http}/v1/traces", req.SerializeToString())
            assert status in (429, 503) and "Retry-After" in headers
        # the receiver says it is not ready while the broker is away
        status, body = receiver.get("/readyz")
        assert status == 503 and body["checks"]["kafka"]["ok"] is False
        assert receiver.metric("tracepipe_kafka_produce_failures_total", topic=topic) >= 1

        # the broker returns on the same address (empty: Tansu memory storage)
        broker = start_local_kafka(broker.port)
        asyncio.run(create_topic(broker.url, topic, 2))
        wait_for(lambda: receiver.get("/readyz")[0] == 200, 30, "the receiver to see the broker again")
        # the clients retry everything they were refused
        for req in pending:
            deadline = time.monotonic() + 30
            while True:
                try:
                    stub.Export(req, timeout=15)
                    break
                except grpc.RpcError as e:
                    assert e.code() in RETRYABLE_GRPC and time.monotonic() < deadline, e
                    time.sleep(0.5)
        sent = sum(spans_in(r) for r in pending)
        worker = start_role("worker", cfg, env, tmp_path / "worker.log")
        wait_for(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= sent, 60,
                 "the worker to store the retried spans")
    finally:
        receiver.stop()
        if worker is not None:
            worker.stop()
        broker.stop()
    rows = read_rows(tmp_path / "ch")
    assert len(rows) == sent == len({(t, s) for t, s, _, _ in rows})
