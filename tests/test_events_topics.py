"""Derived events of the distributed worker: every anomaly is an alert on `tracepipe.alerts` and
itself on `tracepipe.events.anomaly` (real Tansu broker, read back with a plain consumer)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from pipeline.anomaly.config import AnomalyConfig
from pipeline.config import KafkaTransportConfig, load_config
from pipeline.runtime_support import build_alerts
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_common import KafkaSetupError, ensure_topics
from pipeline.worker.events import KafkaEventPublisher
from processors.anomaly import AnomalyProcessor
from tests.anomaly_streams import KeyProfile, ManualClock, context
from tests.services import start_service
from tests.test_anomaly import feed, tick

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "distributed.yaml"


@pytest.fixture(scope="module")
def kafka():
    svc = start_service("kafka")
    yield svc
    svc.stop()


async def read_topic(brokers: str, topic: str, expected: int) -> list[dict[str, Any]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=brokers, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(20):
            batch = await consumer.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
            if len(records) >= expected:
                break
    finally:
        await consumer.stop()
    return [json.loads(r.value) for r in records]


async def test_an_anomaly_goes_to_the_alerts_topic_and_to_its_events_topic(kafka) -> None:
    config = load_config(SHIPPED, env={"KAFKA_BROKERS": kafka.url})  # the shipped topics and prefix
    cfg = config.transport.kafka.model_copy(update={"enable_idempotence": False, "compression": "none"})
    telemetry = Telemetry()
    await ensure_topics(cfg, {cfg.alerts_topic: 1})  # as the worker does at start
    events = KafkaEventPublisher(cfg, telemetry)
    await events.start()
    # The worker's alert path: components emit through the router, whose publisher is `events`.
    alerts = await build_alerts(config, telemetry, publishers=[events])
    clock = ManualClock()
    proc = AnomalyProcessor(
        "anomaly",
        AnomalyConfig.model_validate({"window": {"size": "1m"}, "baseline": {"warmup_windows": 3},
                                      "rules": [{"name": "errors", "metric": "error_rate", "kind": "absolute",
                                                 "threshold": 0.2}]}),
        context(), clock=clock, on_event=alerts.emit,
    )
    try:
        feed(proc, clock, [KeyProfile("chat", "m")], range(12), rng=random.Random(3),
             modifier=lambda w, _p: {"error_rate": 0.6} if w in (6, 7) else {})
        tick(proc, clock, 600)
        assert await alerts.router.flush(10)  # what the worker awaits before it commits a batch
    finally:
        await alerts.close()
        await events.close()
    emitted = [(e["rule"], e["state"]) for e in alerts.store.recent(10)][::-1]
    assert emitted == [("errors", "firing"), ("errors", "resolved")]
    derived = await read_topic(kafka.url, "tracepipe.events.anomaly", 2)
    assert [(e["type"], e["rule"], e["state"]) for e in derived] == [("anomaly", "errors", "firing"),
                                                                    ("anomaly", "errors", "resolved")]
    on_alerts = await read_topic(kafka.url, cfg.alerts_topic, 2)
    assert on_alerts == derived  # the same JSON: the alert the event caused
    assert events.topics_for("alert") == ["tracepipe.alerts"]  # a plain alert has no events topic


async def test_a_missing_events_topic_is_not_created_when_create_topics_is_false(kafka) -> None:
    cfg = KafkaTransportConfig(brokers=kafka.url, enable_idempotence=False, compression="none", produce_timeout=5,
                               alerts_topic="alerts-nocreate", events_topic_prefix="ev-nocreate.",
                               create_topics=False)
    await ensure_topics(cfg.model_copy(update={"create_topics": True}), {cfg.alerts_topic: 1})
    events = KafkaEventPublisher(cfg, Telemetry())
    await events.start()
    try:
        with pytest.raises(KafkaSetupError, match=r"ev-nocreate\.anomaly do not exist and .*create_topics is false"):
            await events.publish("anomaly", {"type": "anomaly", "rule": "r", "state": "firing"})
    finally:
        await events.close()
    assert [e["rule"] for e in await read_topic(kafka.url, cfg.alerts_topic, 1)] == ["r"]  # the alert still went
