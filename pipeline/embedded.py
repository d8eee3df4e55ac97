"""The embedded runtime: everything in one process, no servers to run.

receivers (OTLP gRPC + HTTP) -> bounded MemoryTransport -> worker loop (decode, chain,
sinks) with the query API and /metrics alongside. The receiver answers success once the
queue accepted the request; the queue's capacity counts in-flight spans too, so a stalled
sink turns into retryable answers to clients, never into silent loss. On shutdown the
receivers stop first, the queue is drained through the chain, processors flush, sinks close.

With `transport.memory.wal.enabled` (the default) the queue is backed by a write-ahead log
under `<data_dir>/wal/`: a request is acknowledged once it is in the log, and what the log
still holds at start (after a crash, or spans a shutdown could not drain) is replayed
through the chain before new traffic is taken. Health: pipeline/runtime_health.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.api import ApiContext
from pipeline.auth.setup import listener_auth_factory
from pipeline.builder import build_chain
from pipeline.chain import Chain
from pipeline.config import Config
from pipeline.dead_letter.service import attach_local_store
from pipeline.http_servers import RunningServer, start_service_servers
from pipeline.otlp.decode import decode_request
from pipeline.receivers import build_receivers as build_all_receivers
from pipeline.receivers import record_endpoints
from pipeline.runtime_health import RuntimeHealth
from pipeline.runtime_support import build_alerts, build_services, close_services_and_queries, open_queries
from pipeline.services import Services
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport, TakenBatch
from pipeline.transport.wal import WriteAheadLog

log = logging.getLogger("tracepipe.embedded")


@dataclass
class Endpoints:
    """Where a started runtime actually listens (ports resolved when 0 was asked)."""

    otlp_grpc: str | None = None
    otlp_http: str | None = None
    api: str | None = None
    metrics: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_receivers(config: Config, transport: Any, telemetry: Telemetry, logs: Any = None) -> list[Any]:
    """The receivers the config declares, bound to `transport` (through RECEIVER_FACTORIES); their
    OTLP logs go to `logs` (a LogsDestination; None: counted and dropped)."""
    return build_all_receivers(config, transport, telemetry, logs)


class EmbeddedRuntime:
    def __init__(self, config: Config, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.transport = MemoryTransport(
            config.transport.memory.capacity_spans, self.telemetry, wal=build_wal(config, self.telemetry)
        )
        self.state = MemoryStateStore()
        self.services = Services()
        self.alerts: Any = None
        self.chain: Chain | None = None
        self.receivers: list[Any] = []
        self.servers: list[RunningServer] = []
        self.endpoints = Endpoints()
        self.queries: Any = None
        self.logs_store: Any = None
        self._worker: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(2)
        self._stopping = False
        hcfg = config.service.health
        self.health = RuntimeHealth(
            self.telemetry, stall_timeout=hcfg.stall_timeout, watchdog_timeout=hcfg.watchdog_timeout,
            queued=lambda: self.transport.size,
            failing_sinks=lambda: self.chain.failing_sinks if self.chain is not None else {},
        )

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> Endpoints:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.alerts = await build_alerts(cfg, self.telemetry, publishers=[], persist=True)
        emit = self.alerts.emit if self.alerts is not None else None
        self.services = await build_services(cfg, self.telemetry)
        if self.alerts is not None:
            self.services.alerts = self.alerts.store
        self.chain = build_chain(cfg, self.telemetry, state=self.state, emit_event=emit, services=self.services)
        attach_local_store(self.chain, cfg.data_dir, self.services)
        await self.chain.start()
        try:
            replayed = self.transport.load_replay()
            if replayed:
                log.info("write-ahead log: replaying %d spans acknowledged before the last stop", replayed)
            self.health.start()
            self.queries = await open_queries(cfg, self.chain, self.services)
            self._worker = asyncio.create_task(self._work(), name="tracepipe-worker")
            from pipeline.logs_store import build_logs_store

            self.logs_store = await build_logs_store(cfg, self.chain, self.telemetry)
            await self._start_servers()
            self.receivers = build_receivers(cfg, self.transport, self.telemetry, logs=self.logs_store)
            for r in self.receivers:
                await r.start()
        except BaseException:
            await self.stop()
            raise
        record_endpoints(self.receivers, self.endpoints)
        return self.endpoints

    async def _start_servers(self) -> None:
        svc = self.config.service
        readiness = {
            "transport": lambda: (self.transport.ready(), f"queue {self.transport.size}/{self.transport.capacity}"),
            "sinks": lambda: self.chain.ready() if self.chain else (False, "not started"),
            "delivery": self.health.delivery,
        }
        liveness = {
            "worker": self._worker_alive,
            "event_loop": self.health.event_loop,
            "worker_taking": lambda: self.health.worker_taking(self.transport.waiting),
        }
        api_ctx = ApiContext(
            telemetry=self.telemetry,
            queries=self.queries,
            liveness=liveness,
            readiness=readiness,
            services=self.services,
        )
        for kind, where in (await start_service_servers(svc, api_ctx, self.telemetry, self.servers,
            listener_auth_factory(self.config, self.telemetry))).items():
            setattr(self.endpoints, kind, where)

    def _worker_alive(self) -> tuple[bool, str]:
        if self._worker is None:
            return False, "not started"
        if self._worker.done():
            return False, "worker loop ended"
        return True, "running"

    async def stop(self) -> None:
        """Stop accepting, drain the queue through the chain, flush and close everything."""
        if self._stopping:
            return
        self._stopping = True
        for r in self.receivers:
            with contextlib.suppress(Exception):
                await r.stop()
        await self.transport.close()
        if self.logs_store is not None:
            with contextlib.suppress(Exception):
                await self.logs_store.close()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), self.config.service.shutdown_timeout)
            except TimeoutError:
                log.error("shutdown: %d spans still queued after %.0fs; %s",
                          self.transport.size, self.config.service.shutdown_timeout,
                          "they stay in the write-ahead log for the next start" if self.transport.wal
                          else "they are lost")
                self._worker.cancel()
                for t in list(self._in_flight):
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await self._worker
        if self.chain is not None:
            with contextlib.suppress(Exception):
                await self.chain.flush()
            self.transport.collect(self._held_batches())
            await self.chain.close()
        with contextlib.suppress(Exception):
            await self.transport.close_log()
        await self.health.stop()
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                await self.alerts.close()
        await close_services_and_queries(self.services, self.queries)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()

    # --- worker ----------------------------------------------------------------------

    async def _work(self) -> None:
        assert self.chain is not None
        bcfg = self.config.service.batch
        idle_tick = max(bcfg.timeout, 0.05)
        while True:
            await self._slots.acquire()
            # No wait_for around take: take's own idle timeout returns an empty batch, and
            # cancelling take (shutdown) never loses a request.
            self.health.take_since = time.monotonic()
            try:
                taken = await self.transport.take(bcfg.max_spans, bcfg.timeout, idle_timeout=idle_tick * 5)
            finally:
                self.health.take_since = None
            if taken is not None and not taken.items:
                self._slots.release()
                try:
                    await self.chain.tick()
                except Exception:
                    log.exception("chain tick failed")
                self.transport.collect(self._held_batches())
                continue
            if taken is None:
                self._slots.release()
                break
            task = asyncio.create_task(self._handle(taken))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _handle(self, taken: TakenBatch) -> None:
        assert self.chain is not None
        try:
            await self.transport.persist_taken()
            spans: list[Span] = []
            t0 = time.perf_counter()
            for item in taken.items:
                spans.extend(decode_request(item.request))
            self.telemetry.decode_duration.observe(time.perf_counter() - t0)
            batch = SpanBatch(spans=spans, batch_id=taken.batch_id,
                              meta={"received_at": taken.oldest_enqueued_at, "taken_at": time.monotonic()})
            self.telemetry.batch_spans.labels("all").observe(len(spans))
            await self.chain.run(batch)
            self.health.batch_completed()
        except Exception:
            log.exception("batch %s failed unexpectedly; its spans are lost", taken.batch_id)
            self.telemetry.dropped_spans.labels("internal_error").inc(taken.spans)
        finally:
            try:
                await self.transport.release(taken, self._held_batches())
            finally:
                self._slots.release()

    def _held_batches(self) -> set[str]:
        """Transport batch ids any processor still holds spans of (`held_batches()`, if it has one)."""
        held: set[str] = set()
        if self.chain is None:
            return held
        for pipe in self.chain.pipelines:
            for proc in pipe.processors:
                fn = getattr(proc, "held_batches", None)
                if fn is not None:
                    try:
                        held |= set(fn())
                    except Exception:
                        log.exception("processor %s: held_batches failed", proc.component_id)
        return held


def build_wal(config: Config, telemetry: Telemetry) -> WriteAheadLog | None:
    """The embedded queue's write-ahead log as configured (None when disabled)."""
    wcfg = config.transport.memory.wal
    if not wcfg.enabled:
        return None
    from pathlib import Path

    directory = Path(wcfg.dir) if wcfg.dir else config.data_dir / "wal"
    return WriteAheadLog(directory, max_bytes=wcfg.max_bytes, segment_bytes=wcfg.segment_bytes,
                         fsync=wcfg.fsync, batch_interval=wcfg.batch_interval, telemetry=telemetry)

