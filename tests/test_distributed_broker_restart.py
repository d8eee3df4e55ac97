"""The broker restarts under a running worker and receiver: nothing is lost, nothing is counted twice.

Tansu runs with `s3://` storage on a local S3 server (tests/services/kafka.py, persistent=True),
so a restart keeps what a real cluster keeps: topics, records, the group's committed offsets.
A producer streams traces keyed per trace (as the receiver writes them) while a worker and a
receiver run as real subprocesses; mid-stream the broker is killed (SIGKILL) and started again on
the same port after a pause longer than the worker's session timeout. Neither role is touched:
the receiver must refuse data with a retryable code while the broker is gone and accept it again
once it is back, and the worker must reconnect and carry on from its committed offsets by
itself. Once it has recovered, the worker is made to exit right after storing a
batch and before committing it (the worst moment), and a replacement takes over: it has to find
that batch's cut in the cuts table's changelog, which only a broker that kept its data still
has, so the redelivery is cut the same way and deduplicated (Faust recovers the table up to
the changelog's end offset: the S3 server lists object times to the microsecond so that Tansu's
end offset is right, see tests/services/kafka.py). Every span (producer's and receiver's) must
come out of chDB exactly once, with the cost total of pricing the same spans in-process. The
seconds from "broker back" to "the worker committed (= stored) a message produced after it" and
to "the receiver is ready" are printed (figures, not assertions).

The producer is held while the broker is down (a send whose broker dies before answering has an
unknown outcome, and retrying it would duplicate the message in Kafka: the at-least-once
contract of a producer, not the worker's concern); it resumes once the broker is back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request, spans_in
from pipeline.transport.kafka_producer import split_by_trace
from tests.distributed_helpers import RoleProcess, read_rows, role_env, start_role, wait_for, write_config
from tests.services.kafka import PersistentKafka
from tests.test_distributed_crash import expected_cost

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=40)

DOWN_SECONDS = 8.0  # longer than the test config's broker_session_timeout (6 s)
RECEIVER_REQUESTS = 6
RETRYABLE_GRPC = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


class HeldStream:
    """Produces requests (4 traces each, one message per trace, keyed by trace id) in the
    background until `finish()`. `hold()` waits for the request in flight to be acknowledged and
    keeps the producer from sending until `resume()`."""

    def __init__(self, url: str, topic: str, pause: float, seed: int) -> None:
        self.url, self.topic, self.pause, self.seed = url, topic, pause, seed
        self.requests: list[ExportTraceServiceRequest] = []
        self.offsets: list[dict[int, int]] = []  # per request: partition -> last offset written
        self.where: dict[str, tuple[int, int]] = {}
        self.gate = threading.Lock()
        self.done = threading.Event()
        self._finish = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: self._guard(asyncio.run, self._produce()), daemon=True)

    @property
    def sent_spans(self) -> int:
        return sum(spans_in(r) for r in self.requests)

    def last_offsets(self, upto: int | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for offs in self.offsets[:upto]:
            for p, o in offs.items():
                out[p] = max(out.get(p, -1), o)
        return out

    def start(self) -> HeldStream:
        self.thread.start()
        return self

    def hold(self) -> int:
        """Blocks the producer after its current request; returns how many requests were sent."""
        self.gate.acquire()
        return len(self.requests)

    def resume(self) -> None:
        self.gate.release()

    def finish(self, timeout: float = 60) -> None:
        self._finish.set()
        assert self.done.wait(timeout), "producer did not finish"
        if self.error is not None:
            raise self.error

    def _guard(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
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
            while not self._finish.is_set():
                await asyncio.to_thread(self.gate.acquire)
                try:
                    req = make_request(4, seed=self.seed + i, prompt_bytes=100)
                    messages = split_by_trace(req)
                    futures = [await producer.send(self.topic, value, key=key) for key, value in messages]
                    offs: dict[int, int] = {}
                    for (key, _), md in zip(messages, await asyncio.gather(*futures), strict=True):
                        offs[md.partition] = max(offs.get(md.partition, -1), md.offset)
                        self.where[key.decode()] = (md.partition, md.offset)
                    self.requests.append(req)
                    self.offsets.append(offs)
                finally:
                    self.gate.release()
                i += 1
                await asyncio.sleep(self.pause)
        finally:
            await producer.stop()

    def committed_past(self, group: str, offsets: dict[int, int]) -> bool:
        """Whether `group` committed past every (partition, offset) in `offsets`."""
        return asyncio.run(self._committed_past(group, offsets))

    async def _committed_past(self, group: str, offsets: dict[int, int]) -> bool:
        from aiokafka import TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.url)
        await admin.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in offsets]
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        finally:
            await admin.close()
        return all(tp in committed and committed[tp].offset > offsets[tp.partition] for tp in tps)

    def missing(self, stored: set[tuple[str, str]]) -> list[tuple[int, int]]:
        traces = {t for t, _ in stored}
        return sorted(pos for tid, pos in self.where.items() if tid not in traces)


def _stored(w: RoleProcess) -> float:
    try:
        return w.metric("tracepipe_sink_sent_spans_total", sink="clickhouse")
    except OSError:
        return 0.0


def _export(stub: trace_service_pb2_grpc.TraceServiceStub, req: ExportTraceServiceRequest) -> grpc.StatusCode:
    try:
        stub.Export(req, timeout=15)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _span_keys(requests: list[ExportTraceServiceRequest]) -> set[tuple[str, str]]:
    return {(span.trace_id.hex(), span.span_id.hex()) for req in requests for rs in req.resource_spans
            for ss in rs.scope_spans for span in ss.spans}


def test_broker_restart_under_a_running_worker_and_receiver_loses_nothing(persistent_kafka: PersistentKafka,
                                                                         tmp_path: Path) -> None:
    broker = persistent_kafka
    topic, group = "restart_spans", "restart-workers"
    cfg = write_config(tmp_path, topic=topic, group=group, partitions=4)
    chdb = tmp_path / "ch"
    env = role_env(broker.url, chdb_dir=chdb, data_dir=tmp_path / "data")
    crash_now = tmp_path / "crash-now"
    worker = start_role("worker", cfg, {**env, "TRACEPIPE_FAULT_EXIT_WHEN_FILE": str(crash_now)},
                        tmp_path / "worker.log")
    receiver = start_role("receiver", cfg, env, tmp_path / "receiver.log")
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(receiver.otlp_grpc))
    via_receiver = [make_request(5, seed=700 + i, prompt_bytes=50) for i in range(RECEIVER_REQUESTS + 1)]
    stream = HeldStream(broker.url, topic, pause=0.03, seed=9000).start()
    replacement = None
    try:
        wait_for(lambda: _stored(worker) > 100, 60, "the worker to store spans before the restart")
        before = stream.hold()
        behind = not stream.committed_past(group, stream.last_offsets())  # work in flight when the broker dies
        broker.stop_broker(kill=True)
        refused = _export(stub, via_receiver[-1])  # the receiver learns the broker is gone
        assert refused in RETRYABLE_GRPC, refused
        time.sleep(DOWN_SECONDS)
        broker.start_broker()
        back = time.monotonic()
        stream.resume()
        wait_for(lambda: receiver.get("/readyz")[0] == 200, 60, "the receiver to see the broker again")
        receiver_back = time.monotonic() - back
        for req in via_receiver[:-1]:  # accepted = acknowledged by the restarted broker
            assert _export(stub, req) == grpc.StatusCode.OK
        wait_for(lambda: len(stream.requests) > before, 60, "the producer to write again after the restart")
        first_after = dict(stream.offsets[before])
        wait_for(lambda: stream.committed_past(group, first_after), 120,
                 f"the worker to store and commit messages produced after the restart {first_after}", interval=0.1)
        recovery = time.monotonic() - back
        assert worker.alive(), worker.log()[-3000:]
        # Then the worker dies right after storing a batch, before committing it. Its replacement
        # finds that batch's cut in the cuts table's changelog, which the broker kept across its
        # restart, and re-cuts the redelivery the same way: chDB's dedup token drops the repeat.
        wait_for(lambda: len(stream.requests) > before + 25, 60, "more requests after the restart")
        crash_now.touch()
        worker.proc.wait(60)
        assert worker.proc.returncode == 137, worker.log()[-3000:]
        replacement = start_role("worker", cfg, env, tmp_path / "replacement.log", ready_timeout=90)
        wait_for(lambda: len(stream.requests) > before + 50, 60, "more requests after the crash")
        stream.finish()
        wait_for(lambda: stream.committed_past(group, stream.last_offsets()), 120,
                 f"the replacement to commit everything (last offsets written {stream.last_offsets()})", interval=0.5)
        redelivered = replacement.metric("tracepipe_kafka_redelivered_messages_total", topic=topic)
    finally:
        receiver.stop()
        code = replacement.stop() if replacement is not None else None
    assert code == 0, replacement.log()[-3000:]
    requests = stream.requests + via_receiver[:-1]
    expected = _span_keys(requests)
    print(f"\nbroker down {DOWN_SECONDS:.0f} s (SIGKILL, s3 storage kept); recovery after the broker was back: "
          f"worker committed a message produced after it in {recovery:.2f} s, receiver ready in "
          f"{receiver_back:.2f} s; producer requests {before} before, {len(stream.requests) - before} after, "
          f"{RECEIVER_REQUESTS} through the receiver; spans {len(expected)}; worker behind when the broker died: "
          f"{behind}; messages the replacement got redelivered: {redelivered:.0f}")
    assert redelivered >= 1, "the crashed worker's stored-but-uncommitted batch should come back"
    rows = read_rows(chdb)
    keys = [(t, s) for t, s, _, _ in rows]
    assert len(expected) == sum(spans_in(r) for r in requests)
    missing, extra = expected - set(keys), set(keys) - expected
    assert not missing, f"{len(missing)} spans missing, messages {stream.missing(set(keys))}"
    assert not extra, f"{len(extra)} spans stored that were never sent"
    assert len(rows) == len(expected), f"{len(rows) - len(expected)} spans stored twice"
    cost = sum(c or 0.0 for *_, c in rows)
    assert cost > 0
    assert cost == pytest.approx(expected_cost(cfg, requests), rel=1e-12, abs=1e-12)
