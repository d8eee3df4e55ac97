"""Spans a processor holds (tail sampling) survive a worker crash.

The worker commits a partition only up to the oldest batch whose spans a processor still
holds (`held_batches()`), so a kill -9 while tail-sampling decisions are pending loses none
of them: the replacement reads those batches again and decides the same traces. The stored
output must equal what the same chain keeps when run in one process without interruption.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.config import load_config
from pipeline.otlp.decode import decode_request
from pipeline.spans import SpanBatch
from tests.distributed_helpers import read_rows, role_env, start_role, wait_for, write_config
from tests.services import RunningService, start_service
from tests.test_distributed_crash import Stream

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=47)

DECISION_WAIT = 20.0  # seconds: long enough that the first worker is killed with every decision pending


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def _tail_sampling_config(tmp: Path) -> Path:
    path = write_config(tmp, topic="held_spans", group="held-workers", partitions=4)
    raw = yaml.safe_load(path.read_text())
    raw["processors"]["sample"] = {"mode": "tail", "probability": 0.5, "decision_wait": DECISION_WAIT}
    raw["service"]["pipelines"]["traces"]["processors"].append("sample")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _kept_uninterrupted(config: Path, requests: list[ExportTraceServiceRequest]) -> set[tuple[str, str]]:
    """(trace id, span id) of what the configured chain keeps, run in-process without a crash."""
    from pipeline.component import ComponentContext
    from pipeline.state import MemoryStateStore
    from pipeline.telemetry import Telemetry
    from processors import PROCESSOR_FACTORIES

    cfg = load_config(config, env={"KAFKA_BROKERS": "x:1"})
    procs = []
    for pid in cfg.service.pipelines["traces"].processors:
        spec = cfg.processors[pid]
        ctx = ComponentContext(pid, Telemetry(), MemoryStateStore(), Path("/nonexistent"), logging.getLogger(pid))
        procs.append(PROCESSOR_FACTORIES[spec.type].create(pid, spec.config, ctx))
    kept = []
    for i, req in enumerate(requests):
        copy = ExportTraceServiceRequest()
        copy.CopyFrom(req)
        batch = SpanBatch(spans=decode_request(copy), batch_id=f"b{i}")
        for p in procs:
            batch = p.process(batch)
        kept.extend(batch.spans)
    kept.extend(procs[-1].flush())
    return {(s.trace_id, s.span_id) for s in kept}


def _stored(w: object) -> float:
    try:
        return w.metric("tracepipe_sink_sent_spans_total", sink="clickhouse")  # type: ignore[attr-defined]
    except OSError:
        return 0.0


def test_worker_killed_with_tail_sampling_decisions_pending_loses_none(kafka: RunningService, tmp_path: Path) -> None:
    cfg = _tail_sampling_config(tmp_path)
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    stream = Stream(kafka.url, "held_spans", pause=0.0, seed=4200, min_requests=40, max_requests=40).start()
    stream.finish()
    messages = sum(len(r.resource_spans) for r in stream.requests)  # one message per trace
    w1 = start_role("worker", cfg, env, tmp_path / "w1.log", ready_timeout=90)
    wait_for(lambda: w1.metric("tracepipe_kafka_consumed_messages_total", topic="held_spans") >= messages, 60,
             "the first worker to take every message")
    assert _stored(w1) == 0, "the first worker released spans before its decisions were due"
    w1.kill9()  # every tail-sampling decision still pending
    w2 = start_role("worker", cfg, env, tmp_path / "w2.log", ready_timeout=90)
    try:
        wait_for(lambda: stream.committed_all("held-workers"), DECISION_WAIT + 90,
                 "the replacement to decide the held traces and commit past them", interval=0.5)
    finally:
        assert w2.stop() == 0
    keys = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch")]
    expected = _kept_uninterrupted(cfg, stream.requests)
    assert 0 < len(expected) < stream.sent_spans  # the sampler kept some traces and dropped others
    assert len(keys) == len(set(keys)), "spans stored twice"
    assert set(keys) == expected
