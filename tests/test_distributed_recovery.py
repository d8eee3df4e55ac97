"""Workers recover in seconds and stop cleanly on SIGTERM, losing and double counting nothing.

These tests keep the shipped group settings of config/distributed.yaml (session_timeout,
heartbeat_interval, rebalance_timeout, group_instance_id from TRACEPIPE_GROUP_INSTANCE_ID):
only the Tansu producer workarounds of `tests.distributed_helpers` apply, not its short
group timeouts. Each prints the seconds it measured (`pytest -s` shows them); the bounds
are timeouts on waits, not assertions of speed.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.distributed_helpers import TANSU_KAFKA_SETTINGS, read_rows, role_env, start_role, wait_for, write_config
from tests.services import RunningService, start_service
from tests.test_distributed_crash import Stream

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=110)

# The Tansu producer workarounds only: the group timeouts stay as shipped.
SHIPPED_GROUP_SETTINGS = {
    "worker_options": {k: v for k, v in TANSU_KAFKA_SETTINGS["worker_options"].items() if k.startswith("producer_")}
}


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def _stored(w: object) -> float:
    try:
        return w.metric("tracepipe_sink_sent_spans_total", sink="clickhouse")  # type: ignore[attr-defined]
    except OSError:
        return 0.0


def _sigterm(w: object, timeout: float = 15) -> tuple[int, float]:
    """SIGTERM `w`; (exit code, seconds to exit). The wait is bounded by `timeout`."""
    proc = w.proc  # type: ignore[attr-defined]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker still running {timeout}s after SIGTERM:\n{w.log()[-4000:]}") from None  # type: ignore[attr-defined]
    return rc, time.monotonic() - t0


@pytest.mark.parametrize("static", [True, False], ids=["static-membership", "dynamic-membership"])
def test_replacement_for_a_killed_worker_resumes_storing(kafka: RunningService, tmp_path: Path, static: bool) -> None:
    topic = f"recovery_{'static' if static else 'dynamic'}"
    group = f"recovery-{'static' if static else 'dynamic'}"
    cfg = write_config(tmp_path, topic=topic, group=group, partitions=4, kafka=SHIPPED_GROUP_SETTINGS)
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", data_dir=tmp_path / "data")
    if static:
        env["TRACEPIPE_GROUP_INSTANCE_ID"] = "worker-0"  # what the chart sets from the pod name
    stream = Stream(kafka.url, topic, pause=0.03, seed=7000, max_requests=4000).start()
    w1 = start_role("worker", cfg, env, tmp_path / "w1.log", ready_timeout=90)
    wait_for(lambda: _stored(w1) > 100, 90, "the first worker to store spans")
    w1.kill9()
    killed = time.monotonic()
    w2 = start_role("worker", cfg, env, tmp_path / "w2.log", wait_ready=False)
    try:
        wait_for(lambda: _stored(w2) > 0, 120, "the replacement to store spans", interval=0.1)
        recovery = time.monotonic() - killed
        print(f"\n[recovery] {'static' if static else 'dynamic'} membership: replacement stored spans "
              f"{recovery:.1f}s after the kill -9")
        stream.finish()
        wait_for(lambda: stream.committed_all(group), 90, "the replacement to commit everything", interval=0.5)
    finally:
        rc, _ = _sigterm(w2)
    assert rc == 0, w2.log()[-3000:]
    keys = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch")]
    assert len(set(keys)) == stream.sent_spans, f"spans missing, messages {stream.missing(set(keys))}"
    assert len(keys) == stream.sent_spans, "spans stored twice"


def test_sigterm_while_joining_and_mid_stream_exits_and_loses_nothing(kafka: RunningService, tmp_path: Path) -> None:
    topic, group = "sigterm_spans", "sigterm-workers"
    cfg = write_config(tmp_path, topic=topic, group=group, partitions=4, kafka=SHIPPED_GROUP_SETTINGS)
    env_a = role_env(kafka.url, chdb_dir=tmp_path / "ch-a", data_dir=tmp_path / "data-a")
    env_b = role_env(kafka.url, chdb_dir=tmp_path / "ch-b", data_dir=tmp_path / "data-b")
    stream = Stream(kafka.url, topic, pause=0.03, seed=9000, max_requests=4000).start()

    wa = start_role("worker", cfg, env_a, tmp_path / "wa.log", ready_timeout=90)
    wait_for(lambda: _stored(wa) > 0, 90, "worker A to store spans")
    # B joins the group (a rebalance for A too) and gets SIGTERM before it was ever assigned partitions.
    wb = start_role("worker", cfg, env_b, tmp_path / "wb.log", wait_ready=False)
    wait_for(lambda: "joining consumer group" in wb.log(), 90, "worker B to start joining the group", interval=0.05)
    rc_b, secs_b = _sigterm(wb)
    print(f"\n[sigterm] worker B, during its group join: exit {rc_b} after {secs_b:.1f}s")
    assert rc_b == 0, wb.log()[-3000:]
    assert "shutting down while starting" in wb.log(), "SIGTERM was meant to reach B during its join"
    # A, in the rebalance B's join and leave caused, with batches flowing: SIGTERM mid-stream.
    before = _stored(wa)
    wait_for(lambda: _stored(wa) > before, 60, "worker A to store more spans")
    rc_a, secs_a = _sigterm(wa)
    print(f"[sigterm] worker A, mid-stream: exit {rc_a} after {secs_a:.1f}s")
    assert rc_a == 0, wa.log()[-3000:]
    # C (A's store again) finishes the stream.
    stream.finish()
    wc = start_role("worker", cfg, env_a, tmp_path / "wc.log", wait_ready=False)
    try:
        wait_for(lambda: stream.committed_all(group), 120, "worker C to commit everything", interval=0.5)
    finally:
        rc_c, secs_c = _sigterm(wc)
    print(f"[sigterm] worker C, idle: exit {rc_c} after {secs_c:.1f}s")
    assert rc_c == 0, wc.log()[-3000:]
    keys_a = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch-a")]
    keys_b = [(t, s) for t, s, _, _ in read_rows(tmp_path / "ch-b")]
    union = set(keys_a) | set(keys_b)
    assert len(union) == stream.sent_spans, f"spans missing, messages {stream.missing(union)}"
    assert len(keys_a) == len(set(keys_a)), "spans stored twice in the store A and C shared"
    assert len(keys_b) == len(set(keys_b)), "spans stored twice in B's store"
