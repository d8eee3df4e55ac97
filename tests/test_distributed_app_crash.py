"""A worker whose Faust app crashes under it (a dead consumer thread, producer or agent) exits
with code 1 instead of living on as a process that answers /readyz but consumes nothing; its
replacement takes the uncommitted messages over and nothing is lost or stored twice.

The crash is injected with TRACEPIPE_FAULT_CRASH_APP_AFTER (Faust's public `Service.crash`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.distributed_helpers import read_rows, role_env, start_role, wait_for, write_config
from tests.services import RunningService, start_service
from tests.test_distributed_crash import Stream

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=24)


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def test_a_worker_whose_faust_app_crashed_exits_1_and_its_replacement_loses_nothing(kafka: RunningService,
                                                                                   tmp_path: Path) -> None:
    topic, group = "app_crash_spans", "app-crash-workers"
    cfg = write_config(tmp_path, topic=topic, group=group, partitions=4)
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    stream = Stream(kafka.url, topic, pause=0.03, seed=4242, max_requests=4000)
    w1 = start_role("worker", cfg, {**env, "TRACEPIPE_FAULT_CRASH_APP_AFTER": "3"}, tmp_path / "w1.log")
    stream.start()
    crashed_at = time.monotonic()
    try:
        rc = w1.proc.wait(60)
    finally:
        if w1.proc.poll() is None:
            w1.kill9()
    took = time.monotonic() - crashed_at
    print(f"\n[app crash] worker exited with {rc} {took:.1f}s after the stream started")
    log = w1.log()
    assert rc == 1, log[-3000:]
    assert "the Faust app crashed" in log, log[-3000:]
    w2 = start_role("worker", cfg, env, tmp_path / "w2.log", ready_timeout=60)
    try:
        stream.finish()
        wait_for(lambda: stream.committed_all(group), 90, "the replacement to commit everything", interval=0.5)
    finally:
        assert w2.stop() == 0
    keys = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch")]
    assert len(set(keys)) == stream.sent_spans, f"spans missing, messages {stream.missing(set(keys))}"
    assert len(keys) == stream.sent_spans, "spans stored twice"
