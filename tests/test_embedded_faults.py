"""Faults against the real `tracepipe run` process: kill -9, SIGSTOP/SIGCONT, aborted clients,
a stalled sink. Loopback only, bounded loops; each test names what it proves."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from bench.workload import make_request
from tests.distributed_helpers import read_rows
from tests.embedded_load import (
    Load,
    aborted_http_request,
    embedded_config,
    metric,
    next_seed,
    probe,
    queue_size,
    wait_until,
)
from tests.pipeline_proc import start_pipeline
from tests.services.redis import start_local_redis

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=33)

FAST_BATCH = {"max_spans": 2000, "timeout": 0.05}


def stored_counts(data_dir: Path) -> Counter[tuple[str, str]]:
    return Counter((r[0], r[1]) for r in read_rows(data_dir / "clickhouse"))


def test_kill_9_under_load_loses_no_acknowledged_span_and_stores_none_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = embedded_config(tmp_path, "kill", service={"batch": FAST_BATCH})
    acked: set[tuple[str, str]] = set()
    sent: set[tuple[str, str]] = set()
    rng = random.Random(7)
    replayed_rounds = 0
    for _ in range(4):
        p = start_pipeline(data, "-c", str(cfg))
        replayed_rounds += "write-ahead log: replaying" in p.log()
        load = Load(f"{p.otlp_http}/v1/traces", threads=4, traces=20).start()
        target = len(acked) + rng.randrange(3_000, 9_000)
        try:
            wait_until(lambda t=target, ld=load, a=acked: len(a) + ld.acked_count() >= t, 90, "acknowledged spans")
        finally:
            p.proc.send_signal(signal.SIGKILL)
            p.proc.wait(30)
            load.stop()
        acked |= load.acked
        sent |= load.sent
    p = start_pipeline(data, "-c", str(cfg))
    try:
        wait_until(lambda: queue_size(p) == 0, 120, "the replayed queue to drain")
    finally:
        assert p.stop() == 0, p.log()[-3000:]
    counts = stored_counts(data)
    lost = acked - set(counts)
    twice = {k: n for k, n in counts.items() if n > 1}
    print(f"kill -9: 4 rounds, {len(acked)} spans acknowledged, {len(lost)} lost, {len(twice)} stored twice, "
          f"{len(counts)} stored ({len(counts) - len(acked & set(counts))} of them sent but not acknowledged)")
    assert len(acked) > 10_000
    assert not lost
    assert not twice
    assert set(counts) <= sent
    assert replayed_rounds >= 1  # at least one kill left acknowledged spans in the log


def test_sigstop_sigcont_under_load_every_request_is_answered_and_the_queue_drains(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = embedded_config(tmp_path, "stop", memory={"capacity_spans": 3_000}, service={"batch": FAST_BATCH})
    p = start_pipeline(data, "-c", str(cfg))
    rng = random.Random(11)
    load = Load(f"{p.otlp_http}/v1/traces", threads=6, traces=20, client_timeout=20).start()
    try:
        for _ in range(10):
            time.sleep(rng.uniform(0.2, 1.0))  # the fault schedule, not a wait for an event
            p.proc.send_signal(signal.SIGSTOP)
            time.sleep(rng.uniform(0.05, 1.5))
            p.proc.send_signal(signal.SIGCONT)
    finally:
        p.proc.send_signal(signal.SIGCONT)
        load.stop()
    try:
        wait_until(lambda: queue_size(p) == 0, 60, "the queue to drain")
        assert probe(p, "/healthz")[0] == 200
        wait_until(lambda: probe(p, "/readyz")[0] == 200, 30, "ready again")
    finally:
        assert p.stop() == 0, p.log()[-3000:]
    print(f"SIGSTOP/SIGCONT: {dict(load.statuses)}, slowest answer {load.max_answer:.2f}s "
          f"(pauses up to 1.5s, enqueue_timeout 0.5s), hangs {load.hangs}")
    assert load.hangs == 0
    assert set(load.statuses) <= {"200", "429", "503"}
    assert load.statuses["200"] > 0
    counts = stored_counts(data)
    assert load.acked <= set(counts)


def test_aborted_http_and_cancelled_grpc_requests_leak_no_queue_capacity(tmp_path: Path) -> None:
    data = tmp_path / "data"
    capacity = 900
    cfg = embedded_config(tmp_path, "cancel", memory={"capacity_spans": capacity}, service={"batch": FAST_BATCH})
    p = start_pipeline(data, "-c", str(cfg))
    load = Load(f"{p.otlp_http}/v1/traces", threads=4, traces=100, client_timeout=20).start()
    errors: list[BaseException] = []

    def abort_http() -> None:
        try:
            for i in range(60):
                body = make_request(50, seed=next_seed(), prompt_bytes=200).SerializeToString()
                aborted_http_request("127.0.0.1", p.http_port, body, send_all=i % 3 != 0)
        except BaseException as e:
            errors.append(e)

    cancelled = Counter[str]()

    def cancel_grpc() -> None:
        try:
            with grpc.insecure_channel(p.otlp_grpc) as ch:
                stub = trace_service_pb2_grpc.TraceServiceStub(ch)
                for i in range(60):
                    req = make_request(50, seed=next_seed(), prompt_bytes=200)
                    if i % 2:
                        fut = stub.Export.future(req, timeout=10)
                        time.sleep(0.002 * (i % 5))
                        fut.cancel()
                        cancelled["cancel"] += 1
                    else:
                        try:
                            stub.Export(req, timeout=0.001 * (i % 20 + 1))
                            cancelled["answered"] += 1
                        except grpc.RpcError as e:
                            cancelled[e.code().name] += 1
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=abort_http), threading.Thread(target=cancel_grpc)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    load.stop()
    try:
        assert not errors, errors
        wait_until(lambda: queue_size(p) == 0, 60, "the queue to return to 0")
        # all of the capacity is free again: a request of exactly `capacity` spans gets in
        body = make_request(capacity // 3, seed=next_seed(), prompt_bytes=10).SerializeToString()
        status = wait_until(lambda: _post(p.otlp_http, body) == 200, 30, "a full-capacity request accepted")
        assert status
        wait_until(lambda: queue_size(p) == 0, 60, "the queue to return to 0 again")
    finally:
        assert p.stop() == 0, p.log()[-3000:]
    print(f"cancellations: grpc {dict(cancelled)}, load {dict(load.statuses)}")
    assert cancelled["cancel"] + cancelled["DEADLINE_EXCEEDED"] + cancelled["CANCELLED"] > 0


def _post(base: str, body: bytes) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{base}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def redis_service():
    svc = start_local_redis()
    try:
        yield svc
    finally:
        if svc.process is not None:
            svc.process.send_signal(signal.SIGCONT)
        svc.stop()


def test_readiness_fails_while_the_sink_is_stalled_and_recovers_after(tmp_path: Path, redis_service) -> None:
    budgets = {"budgets": {"redis": {"url": redis_service.url, "socket_timeout": 0.5, "connect_timeout": 0.5},
                           "key_prefix": "tracepipe-test:ready", "unavailable": "block",
                           "budgets": {"global_daily": {"scope": "global", "period": "day"}}}}
    cfg = embedded_config(tmp_path, "ready", sinks=budgets,
                          service={"batch": FAST_BATCH, "health": {"stall_timeout": 2.0}})
    p = start_pipeline(tmp_path / "data", "-c", str(cfg))
    try:
        assert probe(p, "/readyz")[0] == 200
        redis_service.process.send_signal(signal.SIGSTOP)  # the store hangs: every command times out
        body = make_request(20, seed=next_seed(), prompt_bytes=100).SerializeToString()
        assert _post(p.otlp_http, body) == 200
        _status, detail = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(probe(p, "/readyz")), 60,
                                    "readiness to fail")
        assert detail["checks"]["delivery"]["ok"] is False
        assert probe(p, "/healthz")[0] == 200  # a stalled sink is not a reason to restart the process
        redis_service.process.send_signal(signal.SIGCONT)
        wait_until(lambda: probe(p, "/readyz")[0] == 200, 60, "readiness to recover")
        wait_until(lambda: queue_size(p) == 0, 60, "the queue to drain")
        last = metric(p, "tracepipe_last_batch_completed_timestamp_seconds")
        assert last is not None and last > 0
    finally:
        assert p.stop() == 0, p.log()[-3000:]
