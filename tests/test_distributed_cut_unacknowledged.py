"""A batch whose recorded cut Kafka never acknowledged is not stored, so a crash cannot store it twice.

The worker records each batch's offset range in the cuts table and waits for Kafka to
acknowledge that changelog record before its sinks see the batch (pipeline/worker/runtime.py).
Here the broker dies (SIGKILL; Tansu with s3 storage, so it comes back with its data) while a
worker is in the middle of a backlog: the cuts of the batches it takes next from its fetch
buffer cannot be acknowledged. Those batches must be held, not stored. Then the worker is
kill -9'd while the broker is still down, the broker comes back, and a replacement that cuts
batches differently (the first worker takes at most 40 messages per batch, so that it is
mid-backlog for seconds; the replacement up to 5,000) reads everything from the committed offsets.
If a batch had been stored without its cut in Kafka, the replacement would cut its messages
differently, under other batch ids, and chDB would keep both copies (measured with the code that
stored such batches anyway: 1,827 of 7,200 spans stored twice). Every span must come out of chDB
exactly once, with the cost total of pricing the same spans in-process.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.distributed_helpers import create_topic, read_rows, role_env, start_role, wait_for, write_config
from tests.services.kafka import PersistentKafka
from tests.test_distributed_crash import Stream, expected_cost

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=50)

BACKLOG_REQUESTS = 400  # 4 traces of 3 spans each: 1,600 messages, 4,800 spans (~1,000 stored at the kill)
PARTITIONS = 4


def test_a_batch_whose_cut_kafka_did_not_acknowledge_is_held_not_stored(persistent_kafka: PersistentKafka,
                                                                         tmp_path: Path) -> None:
    broker = persistent_kafka
    topic, group = "unacked_cut_spans", "unacked-cut-workers"
    asyncio.run(create_topic(broker.url, topic, PARTITIONS))
    stream = Stream(broker.url, topic, pause=0.0, seed=5150, min_requests=BACKLOG_REQUESTS,
                    max_requests=BACKLOG_REQUESTS).start()
    stream.finish(timeout=180)
    # A short produce_timeout: the worker gives up on a cut soon after the broker is gone.
    (tmp_path / "w1").mkdir()
    cfg = write_config(tmp_path / "w1", topic=topic, group=group, partitions=PARTITIONS,
                       kafka={"produce_timeout": 1.5, "max_batch_messages": 40})
    cfg2 = write_config(tmp_path, topic=topic, group=group, partitions=PARTITIONS, kafka={"produce_timeout": 1.5})
    env = role_env(broker.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    w1 = start_role("worker", cfg, env, tmp_path / "w1.log")
    w2 = None
    try:
        wait_for(lambda: w1.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= 1000, 60,
                 "the worker to store spans of the backlog", interval=0.05)
        broker.stop_broker(kill=True)
        killed = time.monotonic()
        # The first cut may have reached the broker just before it died, unacknowledged; the later
        # ones (the same batch's cut sent again, or the next batches' cuts) cannot have.
        wait_for(lambda: w1.metric("tracepipe_kafka_unconfirmed_cuts_total", topic=topic) >= 3, 60,
                 "three cuts Kafka did not acknowledge")
        time.sleep(1.0)
        unconfirmed = w1.metric("tracepipe_kafka_unconfirmed_cuts_total", topic=topic)
        stored_before = w1.metric("tracepipe_sink_sent_spans_total", sink="clickhouse")
        w1.kill9()
        down = time.monotonic() - killed
        broker.start_broker()
        w2 = start_role("worker", cfg2, env, tmp_path / "w2.log", ready_timeout=90)
        wait_for(lambda: stream.committed_all(group), 180, "the replacement to commit everything", interval=0.5)
        redelivered = w2.metric("tracepipe_kafka_redelivered_messages_total", topic=topic)
    finally:
        if w1.alive():
            w1.kill9()
        code = w2.stop() if w2 is not None else None
    assert code == 0, w2.log()[-3000:] if w2 is not None else ""
    w1_log = w1.log()
    assert "holding the batch, not stored" in w1_log, w1_log[-3000:]
    rows = read_rows(tmp_path / "ch")
    keys = [(t, s) for t, s, _, _ in rows]
    print(f"\n[unacknowledged cut] broker down {down:.1f} s with the worker running; cuts Kafka did not "
          f"acknowledge: {unconfirmed:.0f}; spans the first worker stored: {stored_before:.0f} of "
          f"{stream.sent_spans}; messages redelivered to the replacement in their recorded cut: {redelivered:.0f}")
    assert stored_before < stream.sent_spans, "the broker died after the whole backlog was stored"
    assert len(set(keys)) == stream.sent_spans, f"spans missing, messages {stream.missing(set(keys))[:20]}"
    assert len(keys) == stream.sent_spans, f"{len(keys) - len(set(keys))} spans stored twice"
    cost = sum(c or 0.0 for *_, c in rows)
    assert cost > 0
    assert cost == pytest.approx(expected_cost(cfg, stream.requests), rel=1e-12, abs=1e-12)
