"""The anomaly processor in the Faust worker: a spike replayed through Kafka fires one alert
on the alerts topic, and a worker killed between the baseline and the spike hands its
baselines on through the Faust tables (changelog), so the next worker fires on them.

The stream is the one the embedded tests use (tests.anomaly_streams: Poisson calls, lognormal
latencies, gamma token counts), timed two hours ago and replayed as fast as the broker takes
it; windows close by event time (`idle_close: null`), so the replay needs no waiting.
Warm-up is 15 windows: the worker that sees the spike has only 10 windows of its own before
it, so it can fire only with the baseline the first worker learned.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.spans import Span
from pipeline.transport.kafka_producer import split_by_trace
from tests.anomaly_streams import KeyProfile, window_spans
from tests.distributed_helpers import role_env, start_role, uncommitted, wait_for, write_config
from tests.otlp_support import kv
from tests.services import RunningService, start_service

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=36)

MIN = 60 * 1_000_000_000
WINDOWS_BEFORE_RESTART = 30
WINDOWS = 60
SPIKE = (40, 44)


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def to_request(spans: list[Span]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for s in spans:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([kv(k, v) for k, v in s.resource.attributes.items()])
        ps = rs.scope_spans.add().spans.add(
            trace_id=bytes.fromhex(s.trace_id), span_id=bytes.fromhex(s.span_id), name=s.name, kind=s.kind,
            start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns,
        )
        ps.status.code = s.status_code
        ps.attributes.extend([kv(k, v) for k, v in s.attributes.items()])
    return req


def stream(base_ns: int) -> list[list[Span]]:
    """Spans per window: one key, a 5x cost spike in windows 40-44."""
    rng = random.Random(7)
    profile = KeyProfile("chat", "gpt-4o")
    return [
        window_spans(rng, profile, base_ns + w * MIN, MIN, cost_factor=5.0 if SPIKE[0] <= w <= SPIKE[1] else 1.0)
        for w in range(WINDOWS)
    ]


async def _produce(url: str, topic: str, windows: list[list[Span]]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    last = -1
    try:
        for spans in windows:
            for key, value in split_by_trace(to_request(spans)):
                last = (await (await producer.send(topic, value, key=key, partition=0))).offset
    finally:
        await producer.stop()
    return last


async def _committed(url: str, group: str, topic: str) -> int:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        tp = TopicPartition(topic, 0)
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    return offsets[tp].offset if tp in offsets else -1


async def _alerts(url: str, topic: str) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=url, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict] = []
    try:
        idle_until = time.monotonic() + 5
        while time.monotonic() < idle_until:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(json.loads(r.value) for r in records)
                idle_until = time.monotonic() + 2
    finally:
        await consumer.stop()
    return out


def _config(tmp_path: Path, topic: str, group: str) -> Path:
    path = write_config(tmp_path, topic=topic, group=group, partitions=1)
    raw = yaml.safe_load(path.read_text())
    raw["processors"]["anomaly"] = {
        "window": {"size": "1m"},
        "allowed_lateness": "10s",
        "idle_close": None,  # event time only: the replay runs faster than the clock
        "baseline": {"horizon": "1h", "warmup_windows": 15},
        "rules": [{"name": "cost_spike", "metric": "cost", "kind": "relative", "threshold": 2.0, "min_calls": 20}],
    }
    raw["service"]["pipelines"]["traces"]["processors"] = ["anomaly"]  # the stream carries its costs
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_spike_through_kafka_fires_once_on_baselines_a_killed_worker_left(kafka: RunningService,
                                                                         tmp_path: Path) -> None:
    topic, group = "anomaly_spans", "anomaly-workers"
    cfg = _config(tmp_path, topic, group)
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    base = (time.time_ns() // MIN - 2 * WINDOWS) * MIN
    windows = stream(base)

    # 1) the baseline: 30 windows, committed, then the worker is killed -9
    last = asyncio.run(_produce(kafka.url, topic, windows[:WINDOWS_BEFORE_RESTART]))
    w1 = start_role("worker", cfg, env, tmp_path / "w1.log")
    wait_for(lambda: asyncio.run(_committed(kafka.url, group, topic)) > last, 60,
             "the first worker to commit the baseline windows", interval=0.5)
    w1.kill9()
    # 2) the rest, spike included, through a new worker
    last = asyncio.run(_produce(kafka.url, topic, windows[WINDOWS_BEFORE_RESTART:]))
    w2 = start_role("worker", cfg, env, tmp_path / "w2.log", ready_timeout=60)
    try:
        wait_for(lambda: asyncio.run(_committed(kafka.url, group, topic)) > last, 60,
                 "the second worker to commit the rest of the stream", interval=0.5)
        # The evaluator raises alerts from the pane contributions, after the spans' commit: under load
        # (two test processes on two cores) it was still merging when the alerts were read, and none were.
        wait_for(lambda: asyncio.run(uncommitted(kafka.url, group, f"{group}-anomaly-panes")) == 0, 60,
                 "the evaluator to commit every pane contribution", interval=0.5)
        alerts = [a for a in asyncio.run(_alerts(kafka.url, f"{topic}.alerts")) if a.get("rule") == "cost_spike"]
        derived = [a for a in asyncio.run(_alerts(kafka.url, "tracepipe.events.anomaly"))
                   if a.get("rule") == "cost_spike"]
    finally:
        assert w2.stop() == 0

    fired = [a for a in alerts if a["state"] == "firing"]
    resolved = [a for a in alerts if a["state"] == "resolved"]
    assert len(fired) == 1 and len(resolved) == 1, [(a["state"], a.get("window")) for a in alerts]
    ev = fired[0]
    assert ev["key"] == {"service": "chat", "model": "gpt-4o"}
    # fires on the spike's first window, resolves right after it
    assert ev["window"]["start_ns"] == base + SPIKE[0] * MIN
    assert base + (SPIKE[1] + 1) * MIN < resolved[0]["window"]["end_ns"] <= base + (SPIKE[1] + 3) * MIN
    # the baseline spans the restart: more windows than the second worker saw before the spike
    assert ev["baseline"]["windows"] > SPIKE[0] - WINDOWS_BEFORE_RESTART
    assert ev["observed"] >= ev["threshold"] == pytest.approx(ev["baseline"]["mean"] * 3)
    assert resolved[0]["fingerprint"] == ev["fingerprint"]
    # each event is also on its kind's topic (transport.kafka.events_topic_prefix + "anomaly"), as JSON
    assert [(a["type"], a["state"], a["id"]) for a in derived] == [("anomaly", a["state"], a["id"]) for a in alerts]
