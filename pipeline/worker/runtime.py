"""WorkerRuntime: Kafka span topic -> the chain -> sinks -> ack -> commit, as a Faust app.

Per batch taken off the topic (split per partition, since a batch id names one
partition's offset range `topic/partition/first-last`):

1. the batch's range is recorded in the cuts table (see `pipeline.worker.cuts`) and its
   changelog record acknowledged by Kafka (waited for up to `produce_timeout`; Faust's producer
   flush returns early under produce latency), unless it is a redelivered range whose record
   Kafka acknowledged. A batch whose cut was not acknowledged in time is not run: its messages
   (and the later ones of its partition) are held and the cut sent again on the next
   housekeeping tick, so nothing is stored that a redelivery could cut differently;
2. every message is parsed as an OTLP ExportTraceServiceRequest (one message may hold
   many traces, keyed or not); a message that does not parse is counted and skipped;
   invalid spans are removed and counted as the receivers do;
3. `chain.run(batch)` returns once every sink acknowledged (ClickHouse inserts carry the
   batch id as deduplication token, other sinks are idempotent per batch id);
4. derived events and anomaly pane contributions sent for the batch are acknowledged by Kafka;
5. only then is the batch's last offset + 1 committed, by the worker itself (Faust's own
   commits never cover the span topic, see `pipeline.worker.app`), but never past the first
   offset of the oldest batch whose spans a processor still holds (`held_batches()`, tail
   sampling): those are committed after a tick released them, and a crash re-reads them.

A crash anywhere before 5 redelivers the batch, cut the same way, with the same id.

Within a group generation the worker knows the next offset of each partition (the group's
committed offset when it gets the partition, then the end of its last batch). Messages
below it were done already and are let go; a hole above it is a message the consumer
skipped, so the worker holds what came after it and re-reads from the hole
(`tracepipe_kafka_rereads_total`). A partition whose next offset stays below the end the
broker reports while nothing arrives (a skip at the tail, or a re-read the consumer dropped)
is re-read from its next offset too, from the housekeeping task; "nothing arrives" counts only
time the agent was free to take messages, not the time a take spends in the chain and sinks.
A take that comes while Faust still recovers its tables is let go unprocessed (Faust seeks to the
committed offsets when the recovery ends, and the messages come again). The worker goes past missing
offsets only when the broker no longer has them (below the partition's log start offset:
retention deleted them; `tracepipe_kafka_offset_gaps_total`); otherwise it keeps re-reading
and `/readyz` names the partition, so an acknowledged message is never skipped.

Messages of a recorded range that came back incomplete are held until the rest arrives.
A rebalance stops the fetcher and waits for every unacked message (Faust's
`stream_wait_empty`), so held messages are let go, uncommitted, as soon as the flow stops:
the partition's next owner (often this worker again) gets them from the committed offset.
Without that the rebalance and the held range would wait for each other.

Stopping (SIGTERM) takes at most `transport.kafka.stop_timeout`: the batch in flight finishes,
processors flush unless their held spans are protected by uncommitted offsets, the consumer
stops. Faust internals used here are in `pipeline.worker.faust_compat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.api import ApiContext
from pipeline.auth.setup import listener_auth_factory
from pipeline.builder import build_chain
from pipeline.chain import Chain
from pipeline.config import Config
from pipeline.dead_letter.kafka import KafkaDeadLetterPublisher
from pipeline.http_servers import RunningServer, start_service_servers
from pipeline.otlp.decode import decode_request
from pipeline.otlp.validate import sanitize
from pipeline.runtime_support import build_alerts, build_services, close_services_and_queries, open_queries
from pipeline.services import Services
from pipeline.spans import Span, SpanBatch
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_common import ensure_topics
from pipeline.worker import faust_compat
from pipeline.worker.anomaly_panes import AnomalyPaneExchange, add_pane_agent
from pipeline.worker.app import add_span_agent, create_app
from pipeline.worker.cuts import PlannedBatch, Range, contiguous_run, plan_batches
from pipeline.worker.events import KafkaEventPublisher
from pipeline.worker.faust_compat import current_event as current_partition
from pipeline.worker.faust_compat import release_uncommitted as _release
from pipeline.worker.state import FaustStateStore

log = logging.getLogger("tracepipe.worker")

CUTS_TABLE = "tracepipe-batch-cuts"
MAX_RECORDED = 200  # most recent recorded batch ranges kept per partition
REREAD_INTERVAL = 1.0  # seconds between re-reads of the same missing offsets
STALL_REREAD_AFTER = 2.0  # seconds without a delivery while behind the broker's end before re-reading


class _CutNotRecorded(Exception):
    """Kafka did not acknowledge a batch's recorded cut in time: the batch must not be stored yet."""


class WorkerRuntime:
    def __init__(self, config: Config, telemetry: Telemetry | None = None, *, hold_timeout: float = 30.0) -> None:
        if config.transport.type != "kafka":
            raise ValueError("the worker needs transport.type: kafka")
        self.config = config
        self.kcfg = config.transport.kafka
        self.telemetry = telemetry or Telemetry()
        self.hold_timeout = hold_timeout
        self.app: Any = None
        self.chain: Chain | None = None
        self.state: FaustStateStore | None = None
        self.cuts: Any = None
        self.events: KafkaEventPublisher | None = None
        self.panes: AnomalyPaneExchange | None = None
        self.alerts: Any = None
        self.services = Services()
        self.queries: Any = None
        self.servers: list[RunningServer] = []
        self.endpoints: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._held: dict[Any, list[Any]] = {}
        self._held_since: dict[Any, float] = {}
        # Partitions whose held messages are tried again on the next housekeeping tick (a cut Kafka
        # did not acknowledge, or a start offset that could not be read), and per partition key the
        # recorded ranges Kafka has not acknowledged yet (sent again before their batch runs).
        self._retry: set[Any] = set()
        self._unconfirmed: dict[str, set[Range]] = {}
        self._broker_ok: str | None = "not started"
        self._tasks: list[asyncio.Task[None]] = []
        self._next: dict[Any, tuple[int, int]] = {}  # partition -> (group generation, next offset to process)
        self._holes: dict[Any, tuple[tuple[int, int], float]] = {}  # partition -> (missing offsets, last re-read)
        self._hole_since: dict[Any, float] = {}  # partition -> when its current hole was first seen
        self._delivered_at: dict[Any, float] = {}  # partition -> when the consumer last delivered or we re-read
        self._last_batch = time.monotonic()
        self._started_at = time.monotonic()
        self._take_done_at = self._started_at  # when the agent last finished a take (free to receive again)
        self._committed: dict[Any, int] = {}  # partition -> offset this worker last committed
        self._uncommitted: set[Any] = set()  # partitions whose last commit failed or timed out
        # This process's own copy of the cuts it recorded: a rebalance makes Faust recover the
        # table from its changelog, and a recovered value was seen to lack the latest range.
        self._local_cuts: dict[str, list[Range]] = {}
        self._last_event: Any = None  # Faust table writes outside a batch (ticks, flush) go to its partition
        self._stopping = False
        # Fault injection for crash tests: exit abruptly (no cleanup, like kill -9) right after the
        # sinks acknowledged the N-th batch (or the first batch once the file ..._WHEN_FILE names
        # exists) and before it is acked/committed: the worst moment.
        self._exit_after = int(os.environ.get("TRACEPIPE_FAULT_EXIT_AFTER_SINKS", "0") or 0)
        self._exit_when_file = os.environ.get("TRACEPIPE_FAULT_EXIT_WHEN_FILE") or None
        # ... and for the crash watch: crash the Faust app (as a failed consumer thread would) after N batches.
        self._crash_app_after = int(os.environ.get("TRACEPIPE_FAULT_CRASH_APP_AFTER", "0") or 0)
        # Set when the Faust app crashed under the worker: the CLI then stops and exits with code 1,
        # so a supervisor restarts it instead of a process that answers but consumes nothing.
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._batches_done = 0
        rcfgs = [s.config for s in config.receivers.values()]
        self.max_attributes = max((getattr(r, "max_attributes_per_span", 1000) for r in rcfgs), default=1000)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> dict[str, str]:
        cfg = self.config
        k = self.kcfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        partitions = await ensure_topics(k, {k.topic: k.partitions, k.alerts_topic: 1})
        n_partitions = partitions[k.topic]
        self.events = KafkaEventPublisher(k, self.telemetry)
        await self.events.start()
        try:
            self.alerts = await build_alerts(cfg, self.telemetry, publishers=[self.events])
            emit = self.alerts.emit if self.alerts is not None else self.events.emit
            self.services = await build_services(cfg, self.telemetry)
            if self.alerts is not None:
                self.services.alerts = self.alerts.store
            self.app = create_app(self, n_partitions)
            self.state = FaustStateStore(self.app, n_partitions)
            # Anomaly processors contribute panes here; their keys are evaluated fleet-wide (anomaly_panes).
            self.panes = AnomalyPaneExchange(self, n_partitions)
            self.services.anomaly_panes = self.panes
            self.cuts = self.app.Table(CUTS_TABLE, partitions=n_partitions, key_type=str, value_type=None)
            self.chain = build_chain(cfg, self.telemetry, state=self.state, emit_event=emit, services=self.services)
            # Spans a sink or processor refuses for good go to the dead-letter topic (pipeline/poison.py).
            self.chain.dead_letter = await KafkaDeadLetterPublisher.start_new(k)
            add_span_agent(self.app, self)
            if self.panes.processors:
                await ensure_topics(k, {self.panes.topic: n_partitions})
                add_pane_agent(self.app, self.panes)
            self.app.on_partitions_assigned.connect(self._on_assigned)
            await self.chain.start()
            self.queries = await open_queries(cfg, self.chain, self.services)
            await self._start_servers()
            log.info("joining consumer group %s as %s, %.1fs after the worker started", k.group_id,
                     f"static member {k.group_instance_id!r}" if k.group_instance_id else "a dynamic member",
                     time.monotonic() - self._started_at)
            await self.app.start()
            self.state.mark_started()
            self._broker_ok = None
            self._tasks = [
                asyncio.create_task(self._watch_broker(), name="tracepipe-worker-probe"),
                asyncio.create_task(self._housekeeping(), name="tracepipe-worker-housekeeping"),
                asyncio.create_task(self._release_held_on_rebalance(), name="tracepipe-worker-rebalance"),
                asyncio.create_task(self._watch_app(), name="tracepipe-worker-crash-watch"),
            ]
            if self.panes.processors:
                idle = max(self.config.service.batch.timeout, 0.05) * 5
                self._tasks.append(asyncio.create_task(self.panes.tick_loop(idle), name="tracepipe-anomaly-tick"))
            self._ready.set()
        except BaseException:
            await self.stop()
            raise
        return self.endpoints

    async def stop(self) -> None:
        """Stop within `transport.kafka.stop_timeout`: finish the batch in flight, let the processors
        flush, stop consuming and leave the group. Whatever is not committed by then is redelivered
        to the partition's next owner (cut the same way, so the sinks drop what they had)."""
        if self._stopping:
            return
        self._stopping = True
        t0 = time.monotonic()
        deadline = t0 + self.kcfg.stop_timeout

        def left(floor: float = 0.5) -> float:
            return max(floor, deadline - time.monotonic())

        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self.chain is not None and self._ready.is_set():
            # Processors release what they hold while the Faust app (tables, producer) still runs,
            # after the batch in flight (if any) completed.
            try:
                await asyncio.wait_for(self._lock.acquire(), left() * 0.4)
            except TimeoutError:
                log.error("shutdown: the batch in flight did not complete in time; it will be redelivered")
            else:
                try:
                    if not self._holders():  # held spans are protected by uncommitted offsets: leave them held
                        with contextlib.suppress(Exception), self._table_context():
                            await asyncio.wait_for(self.chain.flush(), left() / 2)
                finally:
                    self._lock.release()
        t_batch = time.monotonic() - t0
        self._let_go_of_held("shutdown")
        if self.app is not None:
            # Table changelog writes reach Kafka before the consumer leaves; then Faust stops (a static
            # member does not leave the group: its restart within session_timeout takes its partitions back).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.app.producer.flush(), left() / 2)
            try:
                await asyncio.wait_for(self.app.stop(), left(2.0))
            except TimeoutError:
                log.warning("shutdown: the Faust app did not stop within transport.kafka.stop_timeout; exiting "
                            "without it (uncommitted batches are redelivered)")
            except Exception:
                log.exception("shutdown: the Faust app failed to stop cleanly")
        t_app = time.monotonic() - t0 - t_batch
        if self.chain is not None:
            await self.chain.close()
            if self.chain.dead_letter is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.chain.dead_letter.close(), left(1.0))
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.alerts.close(), left(1.0))
        if self.events is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.events.close(), left(1.0))
        await close_services_and_queries(self.services, self.queries)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
        log.info("worker stopped in %.1fs (batch in flight and flush %.1fs, consumer %.1fs)",
                 time.monotonic() - t0, t_batch, t_app)

    async def _start_servers(self) -> None:
        svc = self.config.service
        ctx = ApiContext(
            telemetry=self.telemetry,
            queries=self.queries,
            liveness={"worker": self._alive},
            readiness={
                "kafka": lambda: (self._broker_ok is None, self._broker_ok or f"kafka {self.kcfg.brokers}"),
                "consumer": self._consumer_status,
                "sinks": lambda: self.chain.ready() if self.chain else (False, "not started"),
            },
            services=self.services,
        )
        self.endpoints.update(await start_service_servers(svc, ctx, self.telemetry, self.servers,
            listener_auth_factory(self.config, self.telemetry)))

    def _alive(self) -> tuple[bool, str]:
        if self.failure is not None:
            return False, self.failure
        if self.app is None or not self._ready.is_set():
            return False, "not started"
        if self.app.should_stop or self._crash_reason() is not None:
            return False, f"faust app {self.app.state}"
        return True, "running"

    def _crash_reason(self) -> str | None:
        """Why the Faust app (or its consumer) crashed, or None while it has not."""
        app = self.app
        if app is None:
            return None
        if app.crashed or app.consumer.crashed:
            return repr(app.crash_reason or app.consumer.crash_reason)
        return None

    def _forget_partition(self, tp: Any) -> None:
        """Drop what this worker knows of a partition no longer assigned to it: found again from the
        group's committed offset if it comes back."""
        self._next.pop(tp, None)
        self._committed.pop(tp, None)
        self._uncommitted.discard(tp)

    def _consumer_status(self) -> tuple[bool, str]:
        if self.app is None or not self._ready.is_set():
            return False, "not started"
        try:
            assigned = self.app.consumer.assignment()
        except Exception:
            return False, "consumer not running"
        for tp in [tp for tp in self._next if tp not in assigned]:
            self._forget_partition(tp)
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.kcfg.topic)
        holes = self._holes_status()
        if holes is not None:
            return False, holes
        return True, f"group {self.kcfg.group_id}, partitions {mine}"

    async def _watch_broker(self) -> None:
        assert self.events is not None
        while True:
            await asyncio.sleep(2.0)
            try:
                has_brokers = await asyncio.wait_for(self.events.broker_reachable(), 5)
                self._broker_ok = None if has_brokers else "no brokers in metadata"
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._broker_ok = f"kafka unreachable: {type(e).__name__}"

    async def _watch_app(self) -> None:
        """Notice a crashed Faust app (its consumer thread, producer or an agent died: Faust marks the
        app crashed) and report it through `failed`; consuming would not resume by itself."""
        while not self.failed.is_set():
            await asyncio.sleep(1.0)
            reason = self._crash_reason()
            if reason is not None:
                self.failure = f"the Faust app crashed: {reason}"
                log.error("%s; stopping the worker (exit code 1) so that it is restarted", self.failure)
                self.failed.set()

    async def _housekeeping(self) -> None:
        """Idle ticks for time-driven processors, held messages to try again, and held messages
        that never completed."""
        idle = max(self.config.service.batch.timeout, 0.05) * 5
        while True:
            await asyncio.sleep(idle)
            self._update_lag()  # also while a batch is stuck on a sink: that is when lag grows
            if self.panes is not None and self.panes.processors and self._broker_ok is None:
                idle_now = await self._caught_up_partitions(2 * idle)
                if idle_now is not None:
                    self.panes.report_idle(idle_now)
            async with self._lock:
                now = time.monotonic()
                overdue = {tp for tp, since in self._held_since.items() if now - since > self.hold_timeout}
                for tp in overdue:
                    log.warning("held messages of %s not completed after %.0fs; processing what came", tp,
                                self.hold_timeout)
                again, self._retry = self._retry, set()
                for tp in sorted(overdue | (again & set(self._held)), key=str):
                    await self._handle_partition(tp, [], force=tp in overdue)
                if self._broker_ok is None:  # both ask the broker: not while the probe finds it gone
                    await self._reread_stalled(now)
                    # Commits that failed or timed out (a later batch's commit covers them; this is for a
                    # partition gone quiet), one at a time: each costs up to produce_timeout.
                    for tp in [tp for tp in self._uncommitted if tp in self._next]:
                        if not await self._commit_position(tp):
                            break
                if now - self._last_batch > idle and self.chain is not None and self._last_event is not None:
                    try:
                        with self._table_context():
                            await self.chain.tick()
                        await self.events.drain()  # pane contributions of released spans, before their commit
                        if self._holders():  # spans released: their batches' offsets may be committed now
                            for tp in list(self._next):
                                await self._commit_position(tp)
                    except Exception:
                        log.exception("chain tick failed")

    async def _caught_up_partitions(self, quiet: float) -> list[int] | None:
        """Span partitions of this worker with nothing delivered for `quiet` seconds and nothing left to
        read: their anomaly watermark holds no one back. "Nothing left" is checked against the end
        offsets the broker reports now, not the consumer's last fetch: a partition that gets nothing for
        seconds (the consumer behind, or a long take) while its producer writes on would otherwise be
        reported idle, and the other partitions' spans would close windows that its next spans belong in.
        None when the broker could not be asked (the report stays as it was)."""
        assigned = self._span_partitions()
        if assigned is None:
            return None
        now = time.monotonic()
        quiet_tps = [tp for tp in assigned if now - self._quiet_since(tp) >= quiet and tp not in self._held]
        if not quiet_tps:
            return []
        ends = await self._broker_ends(quiet_tps)
        if ends is None:
            return None
        out = []
        for tp in quiet_tps:
            known = self._next.get(tp)
            end = ends.get(tp)
            # never delivered: idle only when empty (a partition read before a restart is not known to be done)
            if end is None or (known[1] if known is not None else 0) < int(end):
                continue
            if tp in self._held or self._delivered_at.get(tp, self._started_at) > now:  # a take came meanwhile
                continue
            out.append(tp.partition)
        return out

    def _quiet_since(self, tp: Any) -> float:
        """Since when nothing came for `tp` while the agent was free to take it. A take is one
        agent call for every partition, so while it runs (a first batch into ClickHouse took 2.2 s)
        the messages that follow wait in Faust's take buffer, not at the broker: counting that
        time as a stall made every long take end in a re-read, and everything after the take's
        offsets was delivered twice."""
        return max(self._delivered_at.get(tp, self._started_at), self._take_done_at)

    def _span_partitions(self) -> list[Any] | None:
        """This worker's partitions of the span topic; None while the consumer cannot say."""
        try:
            return [tp for tp in self.app.consumer.assignment() if tp.topic == self.kcfg.topic]
        except Exception:
            return None

    async def _broker_ends(self, tps: list[Any]) -> dict[Any, int] | None:
        """The end offsets the broker reports now for `tps` (not the consumer's last fetch); None
        when it could not be asked within 5 s."""
        try:
            return await asyncio.wait_for(self.app.consumer.highwaters(*tps), 5)
        except Exception:
            return None

    async def _release_held_on_rebalance(self) -> None:
        """Let held messages go when the consumer's flow stops (a rebalance began); see the module doc."""
        suspended, resumed = faust_compat.flow_events(self.app.consumer)
        while True:
            await suspended.wait()
            async with self._lock:  # after the batch in flight, which the rebalance waits for anyway
                self._let_go_of_held("rebalance")
            await resumed.wait()

    async def _on_assigned(self, app: Any, assigned: Any = (), **kwargs: Any) -> None:
        """Faust's public on_partitions_assigned signal: log each assignment and how long after the start."""
        for tp in [tp for tp in self._next if tp not in assigned]:
            self._forget_partition(tp)
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.kcfg.topic)
        log.info("group %s generation %s: assigned partitions %s of %s, %.1fs after the worker started",
                 self.kcfg.group_id, self.app.consumer_generation_id, mine, self.kcfg.topic,
                 time.monotonic() - self._started_at)

    def _let_go_of_held(self, reason: str) -> None:
        """Release every held message uncommitted: the partition's next owner reads it again."""
        if self._held:
            for tp, evs in self._held.items():
                self.telemetry.kafka_released_messages.labels(tp.topic, reason).inc(len(evs))
                _release(evs)
            log.info("%s: letting go of %d held message(s) of %s, uncommitted", reason,
                     sum(len(v) for v in self._held.values()), sorted(str(tp) for tp in self._held))
        self._held.clear()
        self._held_since.clear()
        self._retry.clear()
        self._holes.clear()
        self._hole_since.clear()

    def _table_context(self) -> contextlib.AbstractContextManager[None]:
        """State writes outside a batch (idle ticks, shutdown flush) go to the changelog
        partition of the last batch this worker ran."""
        return current_partition(self._last_event) if self._last_event is not None else contextlib.nullcontext()

    # --- batches ---------------------------------------------------------------------

    async def handle_events(self, events: Sequence[Any]) -> None:
        """Called by the agent with the events of one take(); see the module doc."""
        await self._ready.wait()
        if self._stopping or self._crash_reason() is not None:
            # Shutting down, or the app crashed (the worker is about to exit): the partition's next
            # owner reads these from the committed offset.
            _release(events)
            return
        by_tp: dict[Any, list[Any]] = {}
        for ev in events:
            by_tp.setdefault(ev.message.tp, []).append(ev)
        if self.app.rebalancing:
            # Faust resumes the flow while it recovers the tables from their changelogs, so a take can
            # come before the recovered state is in place, and a state write made then is overwritten by
            # the recovery (a count of 14 for 15 in tests/test_distributed_state.py). When the recovery
            # ends Faust seeks every span partition to its committed offset: these come again then.
            for tp, evs in by_tp.items():
                self.telemetry.kafka_released_messages.labels(tp.topic, "recovery").inc(len(evs))
            log.debug("%d message(s) taken while Faust recovers its tables: let go, read again after its seek",
                      len(events))
            _release(events)
            return
        async with self._lock:
            if self.panes is not None and self.panes.processors:  # before any contribution of the take
                self.panes.report_busy(await self._busy_partitions(list(by_tp)))
            now = time.monotonic()
            for tp, evs in by_tp.items():
                self._delivered_at[tp] = now
                self.telemetry.kafka_consumed_messages.labels(tp.topic).inc(len(evs))
                await self._handle_partition(tp, evs)
            self._last_batch = self._take_done_at = time.monotonic()

    async def _busy_partitions(self, tps: list[Any]) -> set[int]:
        """The span partitions whose idle report a take of `tps` withdraws: its own, and when it brings
        traffic back to a partition reported idle, every other idle one with messages waiting at the
        broker (all of them when the broker cannot be asked). Else the first partition merged after a
        quiet spell moves the watermark past the spans the others are about to bring."""
        assert self.panes is not None
        busy = {tp.partition for tp in tps}
        idle = set(self.panes.idle_reported)
        if not idle & busy:
            return busy
        assigned = self._span_partitions()
        if assigned is None:
            return busy | idle
        others = [tp for tp in assigned if tp.partition in idle - busy]
        ends = await self._broker_ends(others) if others else {}
        if ends is None:
            return busy | idle
        for tp in others:
            known, end = self._next.get(tp), ends.get(tp)
            if end is None or known is None or known[1] < int(end):
                busy.add(tp.partition)
        return busy

    async def _next_offset(self, tp: Any, generation: int) -> int | None:
        """The next offset of `tp` this worker must process in this group generation: after
        its last batch, or the group's committed offset for a partition new to it; None when
        that cannot be read now (the messages are held and tried again: guessing could skip
        messages or take done ones for new)."""
        known = self._next.get(tp)
        if known is not None and (known[0] == generation or self._held_floor(tp) is not None):
            # Same generation, or spans of this partition are still held here (so the group's committed
            # offset is behind on purpose): what lies between was processed by this worker already.
            self._next[tp] = (generation, known[1])
            return known[1]
        try:  # nothing committed yet: the group starts at the earliest offset
            committed = await faust_compat.committed_offset(self.app.consumer, tp)
        except Exception as e:
            log.warning("start offset of %s unknown (%s); holding its messages and trying again", tp,
                        type(e).__name__)
            return None
        nxt = 0 if committed is None else int(committed)
        self._next[tp] = (generation, nxt)
        return nxt

    async def _handle_partition(self, tp: Any, evs: list[Any], *, force: bool = False) -> None:
        """Run the batches of one partition's messages, holding back what cannot run yet."""
        t = self.telemetry
        generation = self.app.consumer_generation_id
        by_offset: dict[int, Any] = {}
        for ev in [*self._held.pop(tp, []), *evs]:
            old = by_offset.get(ev.message.offset)
            if old is not None and old is not ev:
                _release([old])  # delivered twice: keep the newest
            by_offset[ev.message.offset] = ev
        since = self._held_since.pop(tp, None)
        if not by_offset:
            return
        key = f"{tp.topic}/{tp.partition}"
        nxt = await self._next_offset(tp, generation)
        if nxt is None:
            self._hold(tp, [by_offset[o] for o in sorted(by_offset)], since)
            self._retry.add(tp)
            return
        done = [by_offset.pop(o) for o in [o for o in by_offset if o < nxt]]
        if done:  # processed by this worker in this generation already, or committed before it
            _release(done)
            log.debug("%s: %d message(s) below %d delivered again; already done", key, len(done), nxt)
        if not by_offset:
            return
        offsets = sorted(by_offset)
        n = contiguous_run(offsets, nxt)
        if n < len(offsets):
            hole = (nxt + n, offsets[n] - 1)
            seen = self._holes.get(tp)
            if seen is None or seen[0] != hole:
                self._hole_since[tp] = time.monotonic()
            if force and await self._gone_from_broker(tp, hole):
                # Retention deleted them before they were processed: nothing to re-read.
                self._holes.pop(tp, None)
                self._hole_since.pop(tp, None)
                t.kafka_offset_gaps.labels(tp.topic).inc(hole[1] - hole[0] + 1)
                log.error("%s: offsets %d-%d were deleted by the broker (log retention) before this worker got "
                          "them; going on without them", key, hole[0], hole[1])
                n = len(offsets)
            elif seen is None or seen[0] != hole or time.monotonic() - seen[1] >= REREAD_INTERVAL:
                # The consumer skipped a message: re-read from it before going past it (nothing after
                # the hole is committed meanwhile). Messages fetched before the seek may still show the
                # hole for a take or two, hence at most one re-read per interval.
                self._holes[tp] = (hole, time.monotonic())
                t.kafka_rereads.labels(tp.topic).inc()
                log.info("%s: offsets %d-%d missing from what the consumer delivered; re-reading from %d", key,
                         hole[0], hole[1], hole[0])
                with contextlib.suppress(Exception):
                    await self.app.consumer.seek(tp, hole[0])
        else:
            self._holes.pop(tp, None)
            self._hole_since.pop(tp, None)
        if n < len(offsets):
            force = False  # a recorded range cut by a hole completes once the hole is re-read
        run = [by_offset[o] for o in offsets[:n]]
        in_table = {(int(r[0]), int(r[1])) for r in (self.cuts.get(key) or [])}
        recorded: list[Range] = sorted(in_table | set(self._local_cuts.get(key, ())))[-MAX_RECORDED:]
        plans, held_from = plan_batches(offsets[:n], recorded, force=force)
        log.debug("%s: offsets %d..%d (%d) from %d, %d to run, recorded %s", key, offsets[0], offsets[-1],
                  len(offsets), nxt, held_from, recorded[-3:])
        self._hold(tp, run[held_from:] + [by_offset[o] for o in offsets[n:]], since)
        for i, plan in enumerate(plans):
            try:
                await self._run_batch(tp, key, run[plan.start:plan.stop], plan, recorded, generation)
            except _CutNotRecorded:  # this batch and what follows it wait for the cut (next tick)
                self._hold(tp, [ev for p in plans[i:] for ev in run[p.start:p.stop]], since)
                self._retry.add(tp)
                break

    def _hold(self, tp: Any, evs: list[Any], since: float | None) -> None:
        """Keep `evs` of `tp` back, uncommitted, for a later `_handle_partition`; `since` is when the
        oldest of them was first held (the hold timeout counts from there)."""
        if not evs:
            return
        self._held[tp] = [*evs, *self._held.get(tp, [])]
        self._held_since[tp] = min(since if since is not None else time.monotonic(),
                                   self._held_since.get(tp, float("inf")))

    async def _reread_stalled(self, now: float) -> None:
        """Re-read a partition whose next offset is below the broker's end while nothing arrives.

        The consumer can skip messages around a rebalance or drop the messages of a re-read that
        raced a fetch in flight; when nothing after them arrives, no hole shows in what it
        delivers. Asking the broker for the end offset finds them, and a seek to the next
        offset brings them back (what was processed already is let go on arrival)."""
        assigned = self._span_partitions()
        if assigned is None:
            return
        stalled = [tp for tp in assigned if now - self._quiet_since(tp) >= STALL_REREAD_AFTER]
        if not stalled:
            return
        ends = await self._broker_ends(stalled)
        if ends is None:
            return
        generation = self.app.consumer_generation_id
        for tp in stalled:
            known = self._next.get(tp)
            if known is None:  # nothing delivered yet: the group's committed offset is where to start
                try:
                    committed = await faust_compat.committed_offset(self.app.consumer, tp)
                except Exception:
                    continue
                if committed is None:
                    continue
                known = self._next[tp] = (generation, int(committed))
            end = ends.get(tp)
            if known is None or end is None or known[1] >= int(end):
                continue
            self._delivered_at[tp] = now
            self._holes.pop(tp, None)
            self.telemetry.kafka_rereads.labels(tp.topic).inc()
            log.info("%s/%d: next offset %d is below the broker's end %d and nothing arrived for %.0fs; "
                     "re-reading from %d", tp.topic, tp.partition, known[1], int(end), STALL_REREAD_AFTER,
                     known[1])
            with contextlib.suppress(Exception):
                await self.app.consumer.seek(tp, known[1])

    async def _gone_from_broker(self, tp: Any, hole: tuple[int, int]) -> bool:
        """Whether the broker deleted the offsets of `hole` (all below the partition's log start)."""
        try:
            earliest = await asyncio.wait_for(self.app.consumer.earliest_offsets(tp), 5)
        except Exception:
            return False
        start = earliest.get(tp)
        return start is not None and hole[1] < int(start)

    def _holes_status(self) -> str | None:
        """What /readyz says while offsets stay missing past the hold timeout (None: nothing to say)."""
        now = time.monotonic()
        late = [(tp, self._holes[tp][0], now - since) for tp, since in self._hole_since.items()
                if tp in self._holes and now - since > self.hold_timeout]
        if not late:
            return None
        return "; ".join(f"{tp.topic}/{tp.partition}: offsets {h[0]}-{h[1]} not delivered for {age:.0f}s "
                         "(re-reading)" for tp, h, age in late)

    def _holders(self) -> list[Any]:
        """Processors that hold spans across batches and say from which batches (`held_batches()`)."""
        if self.chain is None:
            return []
        procs = [p for pipe in self.chain.pipelines for p in pipe.processors]
        return [p for p in procs if callable(getattr(p, "held_batches", None))]

    def _held_floor(self, tp: Any) -> int | None:
        """The first offset of the oldest batch of `tp` whose spans a processor still holds, if any."""
        prefix = f"{tp.topic}/{tp.partition}/"
        floor: int | None = None
        for proc in self._holders():
            for bid in proc.held_batches():
                if not bid.startswith(prefix):
                    continue
                first = bid[len(prefix):].split("-", 1)[0]
                if first.isdigit():
                    floor = int(first) if floor is None else min(floor, int(first))
        return floor

    async def _commit_position(self, tp: Any) -> bool:
        """Commit `tp` up to its next offset, but not past a batch whose spans are still held (tail
        sampling): a crash then re-reads them and the processor decides them again. False when the
        commit failed (tried again by housekeeping or the next batch)."""
        known = self._next.get(tp)
        if known is None:
            return True
        offset = known[1]
        floor = self._held_floor(tp)
        if floor is not None and floor < offset:
            offset = floor
        if self._committed.get(tp) == offset:
            return True
        if not await self._commit(tp, offset):
            self._uncommitted.add(tp)
            return False
        self._committed[tp] = offset
        self._uncommitted.discard(tp)
        return True

    async def _commit(self, tp: Any, offset: int) -> bool:
        """Commit `offset` (the next to read) of `tp` now; False when Kafka did not confirm it within
        `produce_timeout` (tried again later: the next batch's commit covers it, and housekeeping
        retries while the partition is idle). Faust's own commits never cover the span topic: its
        messages are released (marked acked) without entering its commit bookkeeping."""
        try:
            ok = await asyncio.wait_for(faust_compat.commit_offsets(self.app.consumer, {tp: offset}),
                                        self.kcfg.produce_timeout)
        except TimeoutError:  # aiokafka retries a commit until the coordinator answers: not while we wait
            ok = False
            log.warning("commit of %s at %d not confirmed within %.1fs; trying again later (a redelivery "
                        "meanwhile is re-cut into its recorded batches)", tp, offset, self.kcfg.produce_timeout)
        except Exception:
            ok = False
            log.warning("commit of %s at %d failed; a redelivery re-cuts the batch", tp, offset, exc_info=True)
        self.telemetry.kafka_commits.labels("ok" if ok else "failed").inc()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("committed %s at %d: %s", tp, offset, ok)
        return ok

    async def _run_batch(self, tp: Any, key: str, evs: list[Any], plan: PlannedBatch, recorded: list[Range],
                         generation: int) -> None:
        assert self.chain is not None and self.events is not None
        t = self.telemetry
        first, last, redelivered = plan.first, plan.last, plan.redelivered
        last_event = evs[-1]
        if plan.partial:
            # The rest of the recorded range never came: a new batch of what did, and the range
            # forgotten, so that no later message of it is dropped as a duplicate (cuts module doc).
            first, last, redelivered = evs[0].message.offset, last_event.message.offset, False
            recorded[:] = [r for r in recorded if r != (plan.first, plan.last)]
            self._unconfirmed.get(key, set()).discard((plan.first, plan.last))
            t.kafka_released_messages.labels(tp.topic, "forced").inc(len(evs))
            log.warning("recorded batch %s/%d/%d-%d incomplete after %.0fs: its %d message(s) run as batch %d-%d",
                        tp.topic, tp.partition, plan.first, plan.last, self.hold_timeout, len(evs), first, last)
        batch_id = f"{tp.topic}/{tp.partition}/{first}-{last}"
        unconfirmed = self._unconfirmed.get(key, set())
        if redelivered and (first, last) not in unconfirmed:
            t.kafka_redelivered_messages.labels(tp.topic).inc(len(evs))
            log.info("batch %s redelivered (%d messages); re-cut to its recorded range", batch_id, len(evs))
        else:
            if not redelivered:
                # Not pruned by the committed offset: Faust records offsets as committed even when a
                # commit failed, and a rebalance can move a partition's committed offset back by one
                # message (measured: the last message of a batch redelivered). Keeping the most
                # recent ranges re-cuts any such redelivery into its original batch.
                recorded[:] = sorted([*recorded, (first, last)])[-MAX_RECORDED:]
                self._local_cuts[key] = list(recorded)
            # else: recorded here, but Kafka did not acknowledge it: send it again.
            try:  # the cut is in Kafka before any sink sees the batch: a redelivery is re-cut the same way
                await self._record_cut(tp, key, recorded, batch_id, last_event)
            except _CutNotRecorded:
                self._unconfirmed.setdefault(key, set()).add((first, last))
                raise
            unconfirmed.discard((first, last))
        log.debug("batch %s: %d messages%s", batch_id, len(evs), " (redelivered)" if redelivered else "")
        spans = self._decode(tp.topic, evs)
        batch = SpanBatch(spans=spans, batch_id=batch_id,
                          meta={"received_at": time.monotonic(), "taken_at": time.monotonic(),
                                "partition": tp.partition})
        t.batch_spans.labels("all").observe(len(spans))
        t.worker_batches_in_flight.inc()
        try:
            with current_partition(last_event):
                try:
                    await self.chain.run(batch)
                except Exception:  # a bug, not bad data (the chain isolates bad spans, retries sinks)
                    log.exception("batch %s failed unexpectedly; its %d spans are lost", batch_id, len(spans))
                    t.dropped_spans.labels("internal_error").inc(len(spans))
            self._last_event = last_event
            await self.events.drain()
            if self.alerts is not None:  # alerts this batch raised reach the alerts topic first
                await self.alerts.router.flush(self.kcfg.produce_timeout)
        finally:
            t.worker_batches_in_flight.dec()
        self._batches_done += 1
        if self._crash_app_after and self._batches_done == self._crash_app_after:
            log.error("TRACEPIPE_FAULT_CRASH_APP_AFTER: crashing the Faust app after batch %s", batch_id)
            self._tasks.append(asyncio.create_task(self.app.crash(RuntimeError("injected by "
                                                                               "TRACEPIPE_FAULT_CRASH_APP_AFTER"))))
        if (self._exit_after and self._batches_done >= self._exit_after) or (
            self._exit_when_file is not None and os.path.exists(self._exit_when_file)
        ):
            log.error("TRACEPIPE_FAULT_EXIT_AFTER_SINKS: exiting after the sinks of batch %s, before its commit",
                      batch_id)
            logging.shutdown()
            os._exit(137)
        self._next[tp] = (generation, last + 1)
        await self._commit_position(tp)
        _release(evs)
        self._update_lag(tp)

    async def _record_cut(self, tp: Any, key: str, recorded: list[Range], batch_id: str, last_event: Any) -> None:
        """Write the partition's recorded ranges to the cuts table and wait, up to `produce_timeout`
        (or until the app crashed), for Kafka to acknowledge the changelog record; raise
        `_CutNotRecorded` otherwise (the caller holds the batch and tries again)."""
        try:
            sent = faust_compat.set_acknowledged(self.cuts, key, [list(r) for r in recorded],
                                                 last_event.message.partition)
        except Exception as e:  # the producer is gone (the app crashed or is stopping)
            sent = asyncio.get_running_loop().create_future()
            sent.set_exception(e)
        crashed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait({sent, crashed}, timeout=self.kcfg.produce_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            crashed.cancel()
        if sent.done() and not sent.cancelled() and sent.exception() is None:
            return
        if sent.done():
            why = "cancelled" if sent.cancelled() else type(sent.exception()).__name__
        else:
            why = "the Faust app crashed" if self.failed.is_set() else "no answer"
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())  # its late outcome: no log noise
        self.telemetry.kafka_unconfirmed_cuts.labels(tp.topic).inc()
        log.warning("batch %s: its recorded cut was not acknowledged by Kafka within %.1fs (%s); holding the "
                    "batch, not stored, and sending the cut again", batch_id, self.kcfg.produce_timeout, why)
        raise _CutNotRecorded(batch_id)

    def _update_lag(self, only: Any = None) -> None:
        """Consumer lag per partition: the end offset the consumer last saw minus the next to process."""
        try:
            assigned = self.app.consumer.assignment()
        except Exception:
            return
        for tp, (_, nxt) in list(self._next.items()):
            if only is not None and tp != only:
                continue
            if tp not in assigned:
                self._forget_partition(tp)
                with contextlib.suppress(KeyError):
                    self.telemetry.kafka_consumer_lag.remove(tp.topic, str(tp.partition))
                continue
            try:
                hw = self.app.consumer.highwater(tp)
            except Exception:
                continue
            if hw is not None:
                self.telemetry.kafka_consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, hw - nxt))

    def _decode(self, topic: str, evs: list[Any]) -> list[Span]:
        t = self.telemetry
        spans: list[Span] = []
        for ev in evs:
            value = ev.value
            try:
                if value is None:
                    raise ValueError("message without a value")
                req = ExportTraceServiceRequest.FromString(value)
                res = sanitize(req, self.max_attributes)
                for reason, n in res.reasons.items():
                    t.dropped_spans.labels(reason).inc(n)
                spans.extend(decode_request(req))
            except Exception as e:
                t.kafka_malformed_messages.labels(topic).inc()
                t.dropped_spans.labels("malformed_message").inc()
                log.warning("skipping message %s[%d]@%d: not an OTLP ExportTraceServiceRequest (%s)",
                            topic, ev.message.partition, ev.message.offset, type(e).__name__)
        return spans
