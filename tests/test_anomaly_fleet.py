"""Fleet-wide anomaly windows: the same seeded stream through 1 worker and then, on a fresh
topic and group, through 3 workers raises the same alerts (rule, key, state, window, calls).

Spans are keyed by trace id over 3 partitions, so with 3 workers every worker sees a third of
every key's spans; its anomaly processor only contributes panes, and each key is evaluated
by the one worker owning its partition of `<group>-anomaly-panes`
(pipeline/worker/anomaly_panes.py). Windows are 2 s of event time (timed two hours ago,
`idle_close: null`), closed by the oldest per-partition watermark, so a worker that runs ahead
closes nothing early. With per-worker windows, each of 3 workers would see a third of the calls:
`min_calls` would silence the rule and the `calls` of each alert would differ.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import zlib
from pathlib import Path

import pytest
import yaml

from pipeline.spans import Span
from pipeline.transport.kafka_producer import split_by_trace
from tests.anomaly_streams import KeyProfile, window_spans
from tests.distributed_helpers import RoleProcess, role_env, start_role, uncommitted, wait_for, write_config
from tests.services import RunningService, start_service
from tests.test_anomaly_distributed import _alerts, to_request

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=55)

SEC = 1_000_000_000
WINDOW = 2 * SEC
WINDOWS = 40
SPIKE = (24, 27)
PARTITIONS = 3


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def stream(base_ns: int) -> list[list[Span]]:
    """Spans per window: two keys, a 5x cost spike on chat/gpt-4o in windows 24-27 (about 2,800 spans)."""
    rng = random.Random(13)
    chat = KeyProfile("chat", "gpt-4o", calls_per_window=45)
    batch = KeyProfile("batch", "gpt-4o-mini", calls_per_window=25, cost_per_call=0.0001)
    out = []
    for w in range(WINDOWS):
        start = base_ns + w * WINDOW
        spans = window_spans(rng, chat, start, WINDOW, cost_factor=5.0 if SPIKE[0] <= w <= SPIKE[1] else 1.0)
        spans += window_spans(rng, batch, start, WINDOW)
        out.append(sorted(spans, key=lambda s: s.end_ns))
    return out


async def _produce(url: str, topic: str, windows: list[list[Span]]) -> dict[int, int]:
    """Every trace to partition crc32(trace id) % 3; the last offset per partition."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    last: dict[int, int] = {}
    try:
        for spans in windows:
            for key, value in split_by_trace(to_request(spans)):
                p = zlib.crc32(key) % PARTITIONS
                last[p] = (await (await producer.send(topic, value, key=key, partition=p))).offset
    finally:
        await producer.stop()
    return last


def _config(tmp_path: Path, topic: str, group: str) -> Path:
    path = write_config(tmp_path, topic=topic, group=group, partitions=PARTITIONS)
    raw = yaml.safe_load(path.read_text())
    raw["processors"]["anomaly"] = {
        "window": {"size": "2s"},
        "allowed_lateness": "0s",
        "idle_close": None,  # event time only: the replay runs faster than the clock
        "baseline": {"horizon": "1m", "warmup_windows": 8},
        "rules": [{"name": "cost_spike", "metric": "cost", "kind": "relative", "threshold": 2.0, "min_calls": 30}],
    }
    raw["service"]["pipelines"]["traces"]["processors"] = ["anomaly"]  # the stream carries its costs
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _partitions_of(worker: RoleProcess) -> list[int]:
    """The span partitions a ready worker holds (its /readyz consumer check), [] when not ready."""
    status, body = worker.get("/readyz")
    found = re.search(r"partitions \[([0-9, ]*)\]", json.dumps(body)) if status == 200 else None
    return [int(x) for x in found.group(1).split(",") if x.strip()] if found else []


def _run(kafka: RunningService, tmp_path: Path, name: str, workers: int, windows: list[list[Span]],
         base: int) -> list[tuple]:
    """The alerts of one run, deduplicated by id, windows relative to `base`, in (rule, key, time) order."""
    topic, group = f"fleet_{name}", f"fleet-{name}"
    cfg = _config(tmp_path, topic, group)
    procs = [  # chDB: one engine per directory, so each worker its own
        start_role("worker", cfg, role_env(kafka.url, chdb_dir=tmp_path / f"ch-{name}-{i}",
                                           data_dir=tmp_path / f"data-{name}-{i}"),
                   tmp_path / f"{name}-w{i}.log", ready_timeout=90)
        for i in range(workers)
    ]
    try:
        # every worker holds a span partition before the stream starts, so all of them take part
        wait_for(lambda: sorted(x for p in procs for x in _partitions_of(p) or [-1]) == list(range(PARTITIONS)), 90,
                 f"{workers} worker(s) to share the {PARTITIONS} partitions", interval=0.5)
        last = asyncio.run(_produce(kafka.url, topic, windows))
        wait_for(lambda: asyncio.run(uncommitted(kafka.url, group, topic, last)) == 0, 120,
                 "the workers to commit the stream", interval=0.5)
        wait_for(lambda: asyncio.run(uncommitted(kafka.url, group, f"{group}-anomaly-panes")) == 0, 60,
                 "the evaluators to commit every pane contribution", interval=0.5)
        alerts = [a for a in asyncio.run(_alerts(kafka.url, f"{topic}.alerts")) if a.get("type") == "anomaly"]
    finally:
        for p in procs:
            assert p.stop() == 0, p.log()[-3000:]
    seen: set[str] = set()
    out = []
    for a in alerts:  # at least once: a redelivered alert has the same id
        if a["id"] in seen:
            continue
        seen.add(a["id"])
        out.append((a["rule"], tuple(sorted(a["key"].items())), a["state"], a["window"]["start_ns"] - base,
                    a["window"]["end_ns"] - base, a["calls"], round(a["observed"], 9)))
    return sorted(out, key=lambda t: (t[0], t[1], t[3]))


def test_one_and_three_workers_raise_the_same_alerts(kafka: RunningService, tmp_path: Path) -> None:
    base = (time.time_ns() // WINDOW) * WINDOW - 2 * 3600 * SEC
    windows = stream(base)
    assert 2000 < sum(len(w) for w in windows) < 4000

    one = _run(kafka, tmp_path, "one", 1, windows, base)
    three = _run(kafka, tmp_path, "three", 3, windows, base)

    assert one == three, f"1 worker: {one}\n3 workers: {three}"
    fired = [a for a in one if a[2] == "firing"]
    assert [(a[0], a[1]) for a in fired] == [("cost_spike", (("model", "gpt-4o"), ("service", "chat")))]
    assert fired[0][3] == SPIKE[0] * WINDOW  # fires on the spike's first window
    assert fired[0][5] >= 30  # all of the key's calls in that window, not one worker's share
    assert [a[2] for a in one] == ["firing", "resolved"]
