"""The quality processor in a distributed worker: answers that change meaning, sent through Kafka,
fire one `quality_drop` on the alerts topic and resolve it; the baseline lives in the worker's Faust
table; each scored answer is a `quality.similarity` score row on its trace (the worker's API)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from pipeline.spans import Span
from pipeline.transport.kafka_producer import split_by_trace
from tests.distributed_helpers import RoleProcess, role_env, start_role, wait_for, write_config
from tests.services import RunningService, start_service
from tests.test_anomaly_distributed import _alerts, to_request
from tests.test_quality import Stream, stream  # noqa: F401  (the fake OpenAI fixture)

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=19)

TOPIC, GROUP = "quality_spans", "quality-workers"


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


async def _produce(url: str, spans: list[Span]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    try:
        for key, value in split_by_trace(to_request(spans)):
            await (await producer.send(TOPIC, value, key=key))
    finally:
        await producer.stop()


def _seen(w: RoleProcess) -> float:
    try:
        return sum(w.metric("tracepipe_quality_spans_total", processor="quality", result=r)
                   for r in ("baseline", "exact", "changed"))
    except OSError:
        return 0.0


def _send(kafka: RunningService, w: RoleProcess, spans: list[Span], before: float) -> float:
    asyncio.run(_produce(kafka.url, spans))
    wait_for(lambda: _seen(w) >= before + len(spans)
             and w.metric("tracepipe_quality_pending_scores", processor="quality") == 0,
             240, "the worker to score every answer")
    return before + len(spans)


def test_a_quality_drop_through_kafka_fires_once_and_resolves_with_score_rows(
    kafka: RunningService, stream: tuple[Stream, object], tmp_path: Path  # noqa: F811
) -> None:
    s, server = stream
    cfg = write_config(tmp_path, topic=TOPIC, group=GROUP, partitions=2, batch_timeout=0.05)
    raw = yaml.safe_load(cfg.read_text())
    raw["processors"]["quality"] = {"sample_rate": 1.0, "window": 10}
    raw["service"]["pipelines"]["traces"]["processors"] = ["redact", "quality"]
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    w = start_role("worker", cfg, env, tmp_path / "worker.log", ready_timeout=120)
    try:
        seen = _send(kafka, w, s.spans(server, 30), 0)  # type: ignore[arg-type]
        s.mode = "drifted"
        drifted = s.spans(server, 30)  # type: ignore[arg-type]
        seen = _send(kafka, w, drifted, seen)
        s.mode = "stable"
        _send(kafka, w, s.spans(server, 30), seen)  # type: ignore[arg-type]

        def quality_alerts() -> list[dict]:
            return [a for a in asyncio.run(_alerts(kafka.url, f"{TOPIC}.alerts")) if a.get("rule") == "quality_drop"]

        alerts = wait_for(lambda: (a := quality_alerts()) and len(a) >= 2 and a, 60, "firing and resolved")
        assert [a["state"] for a in alerts] == ["firing", "resolved"]
        assert "Quality Drop Detected" in alerts[0]["summary"]

        sp = drifted[-1]

        def scores() -> list[dict]:
            status, trace = w.get(f"/api/traces/{sp.trace_id}")
            return [x for x in trace.get("scores", []) if x["source"] == "quality"] if status == 200 else []

        rows = wait_for(scores, 30, "the drifted answer's score row")
        assert [(x["name"], x["span_id"]) for x in rows] == [("quality.similarity", sp.span_id)]
        assert rows[0]["value"] < 0.7
    finally:
        assert w.stop() == 0, w.log()[-3000:]
