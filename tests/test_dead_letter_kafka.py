"""Distributed dead letters: the chain publishes refused spans to the dead-letter topic (real Tansu broker)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.chain import Chain, PipelineRun
from pipeline.component import BaseSink, ComponentContext, SinkError
from pipeline.config import KafkaTransportConfig, RetryConfig
from pipeline.dead_letter.kafka import KafkaDeadLetterPublisher, entry_from_message
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from tests.services import start_service


@pytest.fixture(scope="module")
def kafka():
    svc = start_service("kafka")
    yield svc
    svc.stop()


class Refuses(BaseSink):
    async def write(self, batch: SpanBatch) -> None:
        if any(s.name == "poison" for s in batch.spans):
            raise SinkError("Code: 53. type mismatch", retryable=False, reason="type_mismatch")


async def test_refused_spans_are_published_to_the_dead_letter_topic_as_otlp_with_headers(kafka):
    from aiokafka import AIOKafkaConsumer

    cfg = KafkaTransportConfig(brokers=kafka.url, enable_idempotence=False, compression="none", produce_timeout=5,
                               dead_letter_topic="dl-test")
    t = Telemetry()
    sink = Refuses("clickhouse", ComponentContext("clickhouse", t, MemoryStateStore(), Path("."),
                                                  logging.getLogger("x")))
    chain = Chain([PipelineRun("traces", [], ["clickhouse"])], {"clickhouse": sink}, t,
                  RetryConfig(initial_backoff=0.001, max_backoff=0.002))
    publisher = await KafkaDeadLetterPublisher.start_new(cfg)
    chain.dead_letter = publisher
    spans = [Span(f"{i + 1:032x}", f"{i + 1:016x}", "poison" if i == 5 else f"s{i}", 10, 20) for i in range(8)]
    try:
        await chain.run(SpanBatch(spans, "p0/12-19"))
    finally:
        await publisher.close()
    consumer = AIOKafkaConsumer(cfg.dead_letter_topic, bootstrap_servers=kafka.url, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000, max_records=10)
    finally:
        await consumer.stop()
    records = [r for rs in batch.values() for r in rs]
    assert len(records) == 1
    r = records[0]
    entry = entry_from_message(r.key, r.value, list(r.headers))
    assert (entry.reason, entry.component, entry.pipeline, entry.spans, entry.kind) == (
        "type_mismatch", "clickhouse", "traces", 1, "sink")
    assert entry.batch_id.startswith("p0/12-19/traces~") and entry.id.startswith("dl-")
    (span,) = decode_request(ExportTraceServiceRequest.FromString(r.value))
    assert (span.name, span.span_id) == ("poison", f"{6:016x}")
    assert t.registry.get_sample_value("tracepipe_dead_letter_spans_total",
                                       {"sink": "clickhouse", "reason": "type_mismatch"}) == 1
