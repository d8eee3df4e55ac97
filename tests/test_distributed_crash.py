"""Workers die mid-stream; nothing is lost, nothing is counted twice.

A producer streams traces onto the topic (one message per trace, keyed by trace id, as the
receiver writes them) while workers run as real subprocesses against a real broker (Tansu):

- one worker is made to exit abruptly right after its sinks stored a batch and before that
  batch's offsets were committed (the worst moment; TRACEPIPE_FAULT_EXIT_AFTER_SINKS), the
  next one is kill -9'd at an arbitrary moment mid-stream, a third finishes the stream. All
  share one chDB directory in turn, so the ClickHouse deduplication token (the batch id)
  must match across the redelivery for the rows to come out exact: rows == spans sent, no
  duplicates, the cost total equal to pricing the same spans in-process.
- two workers with a rebalance: a second worker joins mid-stream, then the first dies at the
  worst moment and the second takes its partitions over. Each has its own chDB directory
  (no ClickHouse server here, chDB is one process per directory), so a batch the first
  stored but had not committed is stored again by the second in ITS store: the test proves
  none is missing, none is duplicated within a store, and every cross-store duplicate is a
  span of a message the second worker counted as redelivered, i.e. re-cut into the first
  worker's recorded batch with the same batch id — the dedup token a shared ClickHouse server
  would have dropped. (It does not prove the server-side drop itself: no server here.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request, spans_in
from pipeline.config import load_config
from pipeline.otlp.decode import decode_request
from pipeline.spans import SpanBatch
from pipeline.transport.kafka_producer import split_by_trace
from tests.distributed_helpers import (
    ROOT,
    RoleProcess,
    read_rows,
    role_env,
    start_role,
    uncommitted,
    wait_for,
    write_config,
)
from tests.services import RunningService, start_service

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=65)

SPANS_PER_TRACE = 3


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


class Stream:
    """Produces requests (4 traces each) in the background, keyed per trace, until `finish()`
    (or `max_requests`); remembers the last offset written to each partition."""

    def __init__(self, url: str, topic: str, pause: float, seed: int, min_requests: int = 50,
                 max_requests: int = 2000) -> None:
        self.url, self.topic, self.pause, self.seed = url, topic, pause, seed
        self.min_requests, self.max_requests = min_requests, max_requests
        self.requests: list[ExportTraceServiceRequest] = []
        self.last_offsets: dict[int, int] = {}
        self.where: dict[str, tuple[int, int]] = {}  # trace id -> (partition, offset)
        self.done = threading.Event()
        self._finish = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def sent_spans(self) -> int:
        return sum(spans_in(r) for r in self.requests)

    def start(self) -> Stream:
        self.thread.start()
        return self

    def finish(self, timeout: float = 60) -> None:
        self._finish.set()
        assert self.done.wait(timeout), "producer did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as e:  # surfaced by finish()
            self.error = e
        finally:
            self.done.set()

    async def _produce(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.url, acks="all", max_batch_size=16, linger_ms=0)
        await producer.start()
        try:
            i = 0
            while i < self.max_requests and (i < self.min_requests or not self._finish.is_set()):
                req = make_request(4, seed=self.seed + i, prompt_bytes=100)
                messages = split_by_trace(req)
                futures = [await producer.send(self.topic, value, key=key) for key, value in messages]
                for (key, _), md in zip(messages, await asyncio.gather(*futures), strict=True):
                    self.last_offsets[md.partition] = max(self.last_offsets.get(md.partition, -1), md.offset)
                    self.where[key.decode()] = (md.partition, md.offset)
                self.requests.append(req)
                i += 1
                await asyncio.sleep(self.pause)
        finally:
            await producer.stop()

    def missing(self, stored: set[tuple[str, str]]) -> list[tuple[int, int]]:
        """(partition, offset) of the messages whose trace has no stored span."""
        traces = {t for t, _ in stored}
        return sorted(pos for tid, pos in self.where.items() if tid not in traces)

    def committed_all(self, group: str) -> bool:
        """Whether `group` committed past every message written (committed = stored by a worker)."""
        return asyncio.run(uncommitted(self.url, group, self.topic, self.last_offsets)) == 0


def expected_cost(config: Path, requests: list[ExportTraceServiceRequest]) -> float:
    """The cost total of the same spans priced in-process by the configured processors."""
    import logging

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
    total = 0.0
    for req in requests:
        copy = ExportTraceServiceRequest()
        copy.CopyFrom(req)
        batch = SpanBatch(spans=decode_request(copy), batch_id="expected")
        for p in procs:
            batch = p.process(batch)
        total += sum(float(s.attributes.get("gen_ai.usage.cost_usd") or 0) for s in batch.spans)
    return total


def _stored(w: RoleProcess) -> float:
    try:
        return w.metric("tracepipe_sink_sent_spans_total", sink="clickhouse")
    except OSError:
        return 0.0


def test_worker_killed_midstream_loses_nothing_and_counts_nothing_twice(kafka: RunningService, redis_service,
                                                                       tmp_path: Path) -> None:
    topic = "crash_spans"
    cfg = write_config(tmp_path, topic=topic, group="crash-workers", partitions=4, budgets=True)
    chdb = tmp_path / "ch"
    env = role_env(kafka.url, chdb_dir=chdb, redis_url=redis_service.url, data_dir=tmp_path / "data")
    stream = Stream(kafka.url, topic, pause=0.03, seed=1000)

    # 1) exits right after storing its 4th batch, before committing it
    w1 = start_role("worker", cfg, {**env, "TRACEPIPE_FAULT_EXIT_AFTER_SINKS": "4"}, tmp_path / "w1.log")
    stream.start()
    w1.proc.wait(60)
    assert w1.proc.returncode == 137, w1.log()[-3000:]
    # 2) takes over (redelivery of w1's stored-but-uncommitted batch), then is kill -9'd mid-stream
    w2 = start_role("worker", cfg, env, tmp_path / "w2.log", ready_timeout=60)
    base = _stored(w2)

    def redelivered_w2() -> float:
        return w2.metric("tracepipe_kafka_redelivered_messages_total", topic=topic)

    wait_for(lambda: redelivered_w2() >= 1 and _stored(w2) > base + 60, 60,
             "the second worker to re-cut the first worker's uncommitted batch and store more spans")
    w2.kill9()
    stream.finish()
    # 3) finishes the stream
    w3 = start_role("worker", cfg, env, tmp_path / "w3.log", ready_timeout=60)
    try:
        wait_for(lambda: stream.committed_all("crash-workers"), 60,
                 f"the third worker to commit everything (last offsets written {stream.last_offsets})", interval=0.5)
    finally:
        assert w3.stop() == 0
    rows = read_rows(chdb)
    keys = [(t, s) for t, s, _, _ in rows]
    assert len(set(keys)) == stream.sent_spans, f"spans missing, messages {stream.missing(set(keys))}"
    assert len(rows) == stream.sent_spans, "spans stored twice"
    cost = sum(c or 0.0 for *_, c in rows)
    assert cost > 0
    expected = expected_cost(cfg, stream.requests)
    assert cost == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # the budgets sink (Redis) counted every batch once, redeliveries included
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "budgets", "show", "global", "all", "-c", str(cfg),
                          "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"global_daily"' in out.stdout
    spend = _global_spend(json.loads(out.stdout))
    assert spend == pytest.approx(expected, rel=1e-9)


def _global_spend(doc: object) -> float:
    """The USD spend of the global_daily budget in `tracepipe budgets show --json` output."""
    if isinstance(doc, dict):
        if doc.get("budget") == "global_daily" or doc.get("name") == "global_daily":
            for key in ("spent_usd", "usd", "spend_usd", "cost_usd"):
                if isinstance(doc.get(key), int | float):
                    return float(doc[key])
            spent = doc.get("spent") or doc.get("spend") or {}
            if isinstance(spent, dict) and isinstance(spent.get("usd"), int | float):
                return float(spent["usd"])
        for v in doc.values():
            try:
                return _global_spend(v)
            except LookupError:
                continue
    if isinstance(doc, list):
        for v in doc:
            try:
                return _global_spend(v)
            except LookupError:
                continue
    raise LookupError("no global_daily spend in the output")


def test_two_workers_rebalance_and_a_crash_lose_nothing(kafka: RunningService, tmp_path: Path) -> None:
    topic = "rebalance_spans"
    cfg = write_config(tmp_path, topic=topic, group="rebalance-workers", partitions=4)
    env_a = role_env(kafka.url, chdb_dir=tmp_path / "ch-a", data_dir=tmp_path / "data-a")
    env_b = role_env(kafka.url, chdb_dir=tmp_path / "ch-b", data_dir=tmp_path / "data-b")
    stream = Stream(kafka.url, topic, pause=0.04, seed=5000)
    crash_now = tmp_path / "crash-now"

    wa = start_role("worker", cfg, {**env_a, "TRACEPIPE_FAULT_EXIT_WHEN_FILE": str(crash_now)}, tmp_path / "wa.log")
    stream.start()
    wait_for(lambda: _stored(wa) > 0, 30, "worker A to store spans")
    wb = start_role("worker", cfg, env_b, tmp_path / "wb.log", ready_timeout=60)  # joins: rebalance
    try:
        wait_for(lambda: _stored(wb) > 0, 60, "worker B to get partitions and store spans")
        before = _stored(wa)
        wait_for(lambda: _stored(wa) > before, 30, "worker A to still store spans after the rebalance")
        crash_now.touch()  # A dies right after storing its next batch, before committing it
        wa.proc.wait(60)
        assert wa.proc.returncode == 137, wa.log()[-3000:]
        stream.finish()
        wait_for(lambda: stream.committed_all("rebalance-workers"), 60, "worker B to commit everything",
                 interval=0.5)
        redelivered = wb.metric("tracepipe_kafka_redelivered_messages_total", topic=topic)
    finally:
        assert wb.stop() == 0
    rows_a, rows_b = read_rows(tmp_path / "ch-a"), read_rows(tmp_path / "ch-b")
    keys_a = [(t, s) for t, s, _, _ in rows_a]
    keys_b = [(t, s) for t, s, _, _ in rows_b]
    assert rows_a and rows_b, "both workers should have stored part of the stream"
    union = set(keys_a) | set(keys_b)
    assert len(union) == stream.sent_spans, f"spans missing, messages {stream.missing(union)}"
    dup_a, dup_b = len(keys_a) - len(set(keys_a)), len(keys_b) - len(set(keys_b))
    assert (dup_a, dup_b) == (0, 0), "spans stored twice within one worker's store after the rebalance"
    # Spans in both stores: A's batch stored but not committed when it died (and any batch whose
    # commit a rebalance refused), redelivered to B and re-cut to A's recorded range. B's own
    # redeliveries after the second rebalance land in B's store and were deduplicated there.
    cross = len(set(keys_a) & set(keys_b))
    assert 0 < cross <= redelivered * SPANS_PER_TRACE
