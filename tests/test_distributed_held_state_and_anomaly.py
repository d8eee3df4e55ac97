"""A worker killed while it holds tail-sampling decisions and an open anomaly window: after
recovery, what is stored and the alerts raised are exactly those of an uninterrupted run.

The chain is config/full.yaml's shape: pipeline `accounting` runs the anomaly processor over every
span (fleet-wide windows, pipeline/worker/anomaly_panes.py), pipeline `traces` takes its output
(`from: accounting`) and tail-samples it into ClickHouse. The seeded stream (tests/anomaly_streams.py,
one span per trace, event time two hours ago, 2 s windows, `idle_close: null`) has a 5x cost spike
on chat/gpt-4o in windows SPIKE. It goes to the span topic in three parts:
1. windows before EARLY_WINDOWS, then a wait until the sampler decided them all: stored, committed;
2. up to half way through window SPLIT_WINDOW, inside the spike. Then the rule has fired and not
   resolved, window SPLIT_WINDOW holds half its contributions and cannot close (no span past its
   end yet), and the sampler holds every trace of this part: the worker has committed the span
   partitions only up to the oldest batch it holds (`held_batches()`);
3. the rest, produced while the worker is dead and its replacement starts.
The worker dies after part 2 (kill -9, or the TRACEPIPE_FAULT_EXIT_WHEN_FILE fault: exit after the
sinks of its next batch acknowledged and that batch's pane contributions reached Kafka, before its
commit). The replacement reads the held batches again (re-cut to their recorded ranges: the same
batch ids, so their pane contributions are ignored where merged already), decides them, and goes
on. The reference is the same config and stream, on the same schedule, through one worker that is
never interrupted (its stored spans are also checked against the sampler run in process). The
recovery time printed is from the kill to the replacement storing spans again, which includes the
sampler's DECISION_WAIT.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.spans import Span
from pipeline.transport.kafka_producer import split_by_trace
from tests.anomaly_streams import KeyProfile, window_spans
from tests.distributed_helpers import (
    RoleProcess,
    read_rows,
    role_env,
    start_role,
    uncommitted,
    wait_for,
    write_config,
)
from tests.services import RunningService, start_service
from tests.test_anomaly_distributed import _alerts, to_request
from tests.test_anomaly_fleet import PARTITIONS, _partitions_of
from tests.test_distributed_held_state import _kept_uninterrupted

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=200)

SEC = 1_000_000_000
WINDOW = 2 * SEC
WINDOWS = 34
SPIKE = (19, 22)
SPLIT_WINDOW = 20  # the first part ends half way through this window (inside the spike)
EARLY_WINDOWS = 8  # decided and stored before the rest comes: the kill finds part of the stream committed
DECISION_WAIT = 20.0  # seconds: the traces of the last 20 s of the first part are held at the kill
RULE_KEY = (("model", "gpt-4o"), ("service", "chat"))


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def _stream(base_ns: int) -> tuple[list[Span], list[Span], list[Span]]:
    """The seeded stream in event-time order (about 2,400 spans), in three parts: windows before
    EARLY_WINDOWS, then up to the middle of window SPLIT_WINDOW, then the rest."""
    rng = random.Random(1313)
    chat = KeyProfile("chat", "gpt-4o", calls_per_window=45, error_rate=0.02)
    batch = KeyProfile("batch", "gpt-4o-mini", calls_per_window=25, cost_per_call=0.0001)
    early: list[Span] = []
    first: list[Span] = []
    second: list[Span] = []
    for w in range(WINDOWS):
        start = base_ns + w * WINDOW
        spans = window_spans(rng, chat, start, WINDOW, cost_factor=5.0 if SPIKE[0] <= w <= SPIKE[1] else 1.0)
        spans += window_spans(rng, batch, start, WINDOW)
        spans.sort(key=lambda s: s.end_ns)
        if w < EARLY_WINDOWS:
            early += spans
        elif w < SPLIT_WINDOW:
            first += spans
        elif w > SPLIT_WINDOW:
            second += spans
        else:
            first += spans[: len(spans) // 2]
            second += spans[len(spans) // 2 :]
    return early, first, second


def _messages(spans: list[Span]) -> list[tuple[bytes, bytes]]:
    """(key, value) of the span-topic messages: one per trace, as the receiver writes them."""
    return list(split_by_trace(to_request(spans)))


async def _produce(url: str, topic: str, messages: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Every trace to partition crc32(trace id) % PARTITIONS, in order; the last offset per partition."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    last: dict[int, int] = {}
    try:
        for key, value in messages:
            p = zlib.crc32(key) % PARTITIONS
            last[p] = (await (await producer.send(topic, value, key=key, partition=p))).offset
    finally:
        await producer.stop()
    return last


class _Producing(threading.Thread):
    """`_produce` in the background, so traffic goes on while a worker is down or starting."""

    def __init__(self, url: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        super().__init__(daemon=True)
        self.args = (url, topic, messages)
        self.last: dict[int, int] | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.last = asyncio.run(_produce(*self.args))
        except BaseException as e:  # handed to the test thread
            self.error = e

    def result(self, timeout: float = 180) -> dict[int, int]:
        self.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.last is not None, "producing the second part did not finish"
        return self.last


def _config(tmp_path: Path, topic: str, group: str) -> Path:
    path = write_config(tmp_path, topic=topic, group=group, partitions=PARTITIONS)
    raw = yaml.safe_load(path.read_text())
    raw["processors"] = {
        "anomaly": {
            "window": {"size": "2s"},
            "allowed_lateness": "0s",
            "idle_close": None,  # event time only: the replay runs faster than the clock
            "baseline": {"horizon": "1m", "warmup_windows": 8},
            "rules": [{"name": "cost_spike", "metric": "cost", "kind": "relative", "threshold": 2.0,
                       "min_calls": 30}],
        },
        "sample": {"mode": "tail", "probability": 0.5, "decision_wait": DECISION_WAIT},
    }
    raw["service"]["pipelines"] = {  # config/full.yaml's shape: accounting sees every span, storage is sampled
        "accounting": {"processors": ["anomaly"], "sinks": ["prometheus"]},
        "traces": {"from": "accounting", "processors": ["sample"], "sinks": ["clickhouse"]},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _metric(w: RoleProcess, name: str, **labels: str) -> float:
    try:
        return w.metric(name, **labels)
    except OSError:
        return 0.0


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 9)


def _alert_rows(raw: list[dict[str, Any]], base: int) -> list[tuple]:
    """The anomaly alerts, one per id (at least once: every copy of an id must say the same), windows
    relative to `base`, in (rule, key, window) order."""
    by_id: dict[str, tuple] = {}
    for a in raw:
        if a.get("type") != "anomaly":
            continue
        row = (a["rule"], tuple(sorted(a["key"].items())), a["state"], a["window"]["start_ns"] - base,
               a["window"]["end_ns"] - base, a["calls"], _round(a["observed"]), _round(a["threshold"]),
               _round(a["baseline"]["mean"]) if a.get("baseline") else None, tuple(a["example_trace_ids"]))
        seen = by_id.setdefault(a["id"], row)
        assert seen == row, f"alert {a['id']} raised twice with different content:\n{seen}\n{row}"
    return sorted(by_id.values(), key=lambda t: (t[0], t[1], t[3]))


def _wait_done(kafka: RunningService, group: str, topic: str, last: dict[int, int]) -> None:
    wait_for(lambda: asyncio.run(uncommitted(kafka.url, group, topic, last)) == 0, DECISION_WAIT + 150,
             "the worker to decide every held trace and commit the stream", interval=0.5)
    wait_for(lambda: asyncio.run(uncommitted(kafka.url, group, f"{group}-anomaly-panes")) == 0, 60,
             "the evaluator to commit every pane contribution", interval=0.5)


def _start_worker(kafka: RunningService, tmp_path: Path, cfg: Path, name: str, log_name: str,
                  **extra_env: str) -> RoleProcess:
    env = role_env(kafka.url, chdb_dir=tmp_path / f"ch-{name}", data_dir=tmp_path / f"data-{name}")
    env.update(extra_env)
    w = start_role("worker", cfg, env, tmp_path / f"{log_name}.log", ready_timeout=90)
    wait_for(lambda: sorted(_partitions_of(w)) == list(range(PARTITIONS)), 90,
             f"{log_name} to hold the {PARTITIONS} span partitions", interval=0.5)
    return w


@dataclass
class Reference:
    base: int  # event time of window 0
    early: list[tuple[bytes, bytes]]  # span-topic messages (key, value) of the three parts of the stream
    first: list[tuple[bytes, bytes]]
    second: list[tuple[bytes, bytes]]
    keys: set[tuple[str, str]]  # (trace id, span id) stored
    alerts: list[tuple]


def _run_first_part(kafka: RunningService, w: RoleProcess, topic: str, ref: Reference) -> list[dict]:
    """The windows before EARLY_WINDOWS, decided and stored; then the rest of the first part, taken,
    and the rule fired. The alerts so far."""
    early, first = ref.early, ref.early + ref.first
    asyncio.run(_produce(kafka.url, topic, early))
    wait_for(lambda: _metric(w, "tracepipe_kafka_consumed_messages_total", topic=topic) >= len(early), 120,
             "the worker to take the first windows")
    wait_for(lambda: _metric(w, "tracepipe_sampling_buffered_traces") == 0, DECISION_WAIT + 60,
             "the sampler to decide the traces of the first windows")
    asyncio.run(_produce(kafka.url, topic, ref.first))
    wait_for(lambda: _metric(w, "tracepipe_kafka_consumed_messages_total", topic=topic) >= len(first), 120,
             "the worker to take the first part")

    def fired() -> list[dict] | None:
        alerts = [a for a in asyncio.run(_alerts(kafka.url, f"{topic}.alerts")) if a.get("type") == "anomaly"]
        return alerts if any(a["state"] == "firing" for a in alerts) else None

    return wait_for(fired, 60, "the cost spike to fire", interval=0.5)


@pytest.fixture(scope="module")
def reference(kafka: RunningService, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The stream through one worker that is never interrupted, on the schedule of the killed runs."""
    tmp_path = tmp_path_factory.mktemp("reference")
    base = (time.time_ns() // WINDOW) * WINDOW - 2 * 3600 * SEC
    parts = _stream(base)
    ref = Reference(base, *(_messages(spans) for spans in parts), keys=set(), alerts=[])
    assert [len(m) for m in (ref.early, ref.first, ref.second)] == [len(spans) for spans in parts]  # a trace a span
    topic = group = "combined_ref"
    cfg = _config(tmp_path, topic, group)
    w = _start_worker(kafka, tmp_path, cfg, "ref", "ref-w")
    try:
        _run_first_part(kafka, w, topic, ref)
        last = asyncio.run(_produce(kafka.url, topic, ref.second))
        _wait_done(kafka, group, topic, last)
        raw_alerts = asyncio.run(_alerts(kafka.url, f"{topic}.alerts"))
    finally:
        assert w.stop() == 0, w.log()[-3000:]
    stored = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch-ref")]
    assert len(stored) == len(set(stored)), "the uninterrupted run stored spans twice"
    ref.keys = keys = set(stored)
    messages = ref.early + ref.first + ref.second
    assert keys == _kept_uninterrupted(cfg, [ExportTraceServiceRequest.FromString(v) for _, v in messages])
    assert 0 < len(keys) < len(messages)  # the sampler kept some traces and dropped others
    ref.alerts = alerts = _alert_rows(raw_alerts, base)
    assert [(a[0], a[1], a[2], a[3]) for a in alerts] == [
        ("cost_spike", RULE_KEY, "firing", SPIKE[0] * WINDOW),
        ("cost_spike", RULE_KEY, "resolved", (SPIKE[1] + 1) * WINDOW),
    ], alerts
    assert alerts[0][5] >= 30  # all of the key's calls in the window
    return ref


@pytest.mark.parametrize("kill", ["sigkill", "exit_after_sinks"])
def test_kill_with_held_decisions_and_open_window_changes_nothing(kafka: RunningService, reference: Reference,
                                                                  tmp_path: Path, kill: str) -> None:
    topic = group = f"combined_{kill}"
    cfg = _config(tmp_path, topic, group)
    fault_file = tmp_path / "exit-now"
    w1 = _start_worker(kafka, tmp_path, cfg, "crash", "w1", TRACEPIPE_FAULT_EXIT_WHEN_FILE=str(fault_file))
    producing: _Producing | None = None
    try:
        before = _run_first_part(kafka, w1, topic, reference)
        assert [a["state"] for a in before] == ["firing"], "the kill should come inside the spike"
        held = _metric(w1, "tracepipe_sampling_buffered_traces")
        assert held > 0, "the first worker had decided every trace before the kill"
        stored_before = _metric(w1, "tracepipe_sink_sent_spans_total", sink="clickhouse")
        assert stored_before > 0, "the first windows should be stored (and committed) before the kill"
        if kill == "sigkill":
            w1.kill9()
            killed_at = time.monotonic()
            producing = _Producing(kafka.url, topic, reference.second)
        else:  # dies after the sinks of its next batch (from the second part) acked, before committing it
            fault_file.touch()
            producing = _Producing(kafka.url, topic, reference.second)
            w1.proc.wait(60)
            killed_at = time.monotonic()
            assert w1.proc.returncode == 137, w1.log()[-3000:]
    finally:
        if w1.alive():
            w1.kill9()
    print(f"\n[{kill}] first worker killed holding {held:.0f} undecided traces "
          f"({stored_before:.0f} spans stored before), rule firing, window {SPLIT_WINDOW} open")

    w2 = _start_worker(kafka, tmp_path, cfg, "crash", "w2")
    try:
        ready = time.monotonic() - killed_at
        wait_for(lambda: _metric(w2, "tracepipe_sink_sent_spans_total", sink="clickhouse") > 0,
                 DECISION_WAIT + 120, "the replacement to store spans", interval=0.1)
        storing = time.monotonic() - killed_at
        print(f"[{kill}] recovery: replacement ready {ready:.1f}s and storing again {storing:.1f}s after the kill "
              f"(tail decisions wait {DECISION_WAIT:.0f}s)")
        last = producing.result()
        _wait_done(kafka, group, topic, last)
        alerts = asyncio.run(_alerts(kafka.url, f"{topic}.alerts"))
    finally:
        assert w2.stop() == 0, w2.log()[-3000:]

    keys = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch-crash")]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} spans stored twice"
    assert set(keys) == reference.keys, (f"lost {len(reference.keys - set(keys))} spans, "
                                         f"{len(set(keys) - reference.keys)} stored that the uninterrupted run did not")
    assert _alert_rows(alerts, reference.base) == reference.alerts
