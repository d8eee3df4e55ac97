"""Backpressure, not silent loss: with a sink stalled the queue fills, clients get the
OTLP retryable answers, and once the sink recovers everything they retried is stored once.

The embedded runtime runs in-process (receivers, memory queue, chain, real chDB sink);
the stall is a sink of the pipeline that waits on an event before it acknowledges.
"""

from __future__ import annotations

import asyncio

import aiohttp
import clickhouse_connect
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from bench.workload import make_request, spans_in
from pipeline.component import BaseSink, ComponentConfig, ComponentContext, Factory
from pipeline.config import build_config
from pipeline.embedded import EmbeddedRuntime
from pipeline.spans import SpanBatch
from sinks import SINK_FACTORIES


class GateConfig(ComponentConfig):
    pass


class GateSink(BaseSink):
    """Acknowledges only once the test opens the gate: a stalled downstream."""

    gate: asyncio.Event

    async def write(self, batch: SpanBatch) -> None:
        await self.gate.wait()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    event = asyncio.Event()

    def create(cid: str, cfg: GateConfig, ctx: ComponentContext) -> GateSink:
        sink = GateSink(cid, ctx)
        sink.gate = event
        return sink

    monkeypatch.setitem(SINK_FACTORIES, "gate", Factory("gate", GateConfig, create))
    return event


async def test_stalled_sink_makes_clients_retry_and_everything_retried_is_stored(
    gate: asyncio.Event, chdb_dsn: str, chdb_database: str, tmp_path
) -> None:
    cfg = build_config({
        "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"},
                               "enqueue_timeout": 0.05, "retry_after": 1}},
        "processors": {"normalize": {}, "cost": {}},
        "sinks": {"clickhouse": {"dsn": chdb_dsn, "database": chdb_database}, "gate": {}},
        "transport": {"memory": {"capacity_spans": 3000}},
        "service": {"data_dir": str(tmp_path), "api": {"endpoint": None}, "metrics": {"endpoint": None},
                    "batch": {"max_spans": 1000, "timeout": 0.01},
                    "pipelines": {"traces": {"processors": ["normalize", "cost"], "sinks": ["clickhouse", "gate"]}}},
    })
    runtime = EmbeddedRuntime(cfg)
    ep = await runtime.start()
    bodies = [make_request(100, seed=i).SerializeToString() for i in range(12)]  # 12 x 300 spans
    total = 12 * 300
    try:
        refused: list[bytes] = []
        async with aiohttp.ClientSession() as session:
            for body in bodies[:10]:  # 3000 spans: exactly the capacity, all accepted and held in flight
                async with session.post(f"http://{ep.otlp_http}/v1/traces", data=body,
                                        headers={"Content-Type": "application/x-protobuf"}) as r:
                    assert r.status == 200
            # the queue is full now: the next requests are refused, over HTTP and gRPC
            async with session.post(f"http://{ep.otlp_http}/v1/traces", data=bodies[10],
                                    headers={"Content-Type": "application/x-protobuf"}) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "1"
            refused.append(bodies[10])
            async with grpc.aio.insecure_channel(ep.otlp_grpc) as channel:
                stub = trace_service_pb2_grpc.TraceServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await stub.Export(make_request(100, seed=11))
                assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            refused.append(bodies[11])
            # the pipeline keeps its promise: nothing stored is lost, nothing refused was taken
            assert runtime.transport.size == 3000

            gate.set()  # the sink recovers; clients retry what was refused
            for body in refused:
                for _ in range(200):
                    async with session.post(f"http://{ep.otlp_http}/v1/traces", data=body,
                                            headers={"Content-Type": "application/x-protobuf"}) as r:
                        if r.status == 200:
                            break
                        assert r.status == 429
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("retried request never accepted")
        for _ in range(400):
            if runtime.transport.size == 0:
                break
            await asyncio.sleep(0.05)
        assert runtime.transport.size == 0
    finally:
        await runtime.stop()

    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    try:
        rows, distinct = client.query(
            f"SELECT count(), uniqExact(TraceId, SpanId) FROM {chdb_database}.otel_traces").result_rows[0]
    finally:
        client.close()
    assert rows == total and distinct == total
    assert sum(spans_in(make_request(100, seed=i)) for i in range(12)) == total
    refused_metric = runtime.telemetry.registry.get_sample_value(
        "tracepipe_receiver_refused_spans_total", {"receiver": "otlp", "reason": "queue_full"})
    assert refused_metric is not None and refused_metric >= 600
