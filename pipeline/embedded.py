"""The embedded runtime: everything in one process, no servers to run.

receivers (OTLP gRPC + HTTP) -> bounded MemoryTransport -> worker loop (decode, chain,
sinks) with the query API and /metrics alongside. The receiver answers success once the
queue accepted the request; the queue's capacity counts in-flight spans too, so a stalled
sink turns into retryable answers to clients, never into silent loss. On shutdown the
receivers stop first, the queue is drained through the chain, processors flush, sinks close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.api import ApiContext
from pipeline.builder import build_chain
from pipeline.chain import Chain
from pipeline.config import Config
from pipeline.http_servers import RunningServer, start_service_servers
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport, TakenBatch

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
    """The OTLP receivers the config declares, bound to `transport`; their OTLP logs go to
    `logs` (a LogsDestination; None: counted and dropped)."""
    from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
    from pipeline.receivers.otlp_http import OtlpHttpReceiver

    wanted: set[str] = set()
    for pipe in config.service.pipelines.values():
        if pipe.source is None:
            wanted.update(pipe.receivers or config.receivers.keys())
    receivers: list[Any] = []
    for rid, spec in config.receivers.items():
        if rid not in wanted:
            continue
        cfg = spec.config
        rlog = logging.getLogger(f"tracepipe.receiver.{rid}")
        if getattr(cfg, "grpc", None) is not None:
            receivers.append(OtlpGrpcReceiver(rid, cfg, transport, telemetry, rlog))
        if getattr(cfg, "http", None) is not None:
            receivers.append(OtlpHttpReceiver(rid, cfg, transport, telemetry, rlog))
    for r in receivers:
        r.signals_logs = logs  # pipeline/receivers/otlp_signals.py
    return receivers


class EmbeddedRuntime:
    def __init__(self, config: Config, telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.transport = MemoryTransport(config.transport.memory.capacity_spans, self.telemetry)
        self.state = MemoryStateStore()
        self.extras: dict[str, Any] = {}
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

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> Endpoints:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        from pipeline.runtime_support import build_alerts, build_extras, open_queries

        self.alerts = await build_alerts(cfg, self.telemetry, publishers=[])
        emit = self.alerts.emit if self.alerts is not None else None
        self.extras = await build_extras(cfg, self.telemetry)
        self.chain = build_chain(cfg, self.telemetry, state=self.state, emit_event=emit, extras=self.extras)
        await self.chain.start()
        try:
            self.queries = await open_queries(cfg, self.chain)
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
        for r in self.receivers:
            kind = "otlp_grpc" if type(r).__name__.endswith("GrpcReceiver") else "otlp_http"
            host = _host_of(getattr(r, "cfg", None), kind)
            setattr(self.endpoints, kind, f"{host}:{r.port}")
        return self.endpoints

    async def _start_servers(self) -> None:
        svc = self.config.service
        readiness = {
            "transport": lambda: (self.transport.ready(), f"queue {self.transport.size}/{self.transport.capacity}"),
            "sinks": lambda: self.chain.ready() if self.chain else (False, "not started"),
        }
        api_ctx = ApiContext(
            telemetry=self.telemetry,
            queries=self.queries,
            liveness={"worker": self._worker_alive},
            readiness=readiness,
            extras={**self.extras, **({"alerts": self.alerts.store} if self.alerts is not None else {})},
        )
        for kind, where in (await start_service_servers(svc, api_ctx, self.telemetry, self.servers)).items():
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
                log.error("shutdown: %d spans still queued after %.0fs; they are lost",
                          self.transport.size, self.config.service.shutdown_timeout)
                self._worker.cancel()
                for t in list(self._in_flight):
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await self._worker
        if self.chain is not None:
            with contextlib.suppress(Exception):
                await self.chain.flush()
            await self.chain.close()
        if self.alerts is not None:
            with contextlib.suppress(Exception):
                await self.alerts.close()
        from pipeline.runtime_support import close_extras_and_queries

        await close_extras_and_queries(self.extras, self.queries)
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
            try:
                taken = await asyncio.wait_for(self.transport.take(bcfg.max_spans, bcfg.timeout), idle_tick * 5)
            except TimeoutError:
                self._slots.release()
                try:
                    await self.chain.tick()
                except Exception:
                    log.exception("chain tick failed")
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
            spans: list[Span] = []
            for item in taken.items:
                spans.extend(decode_request(item.request))
            batch = SpanBatch(spans=spans, batch_id=taken.batch_id,
                              meta={"received_at": taken.oldest_enqueued_at, "taken_at": time.monotonic()})
            self.telemetry.batch_spans.labels("all").observe(len(spans))
            await self.chain.run(batch)
        except Exception:
            log.exception("batch %s failed unexpectedly; its spans are lost", taken.batch_id)
            self.telemetry.dropped_spans.labels("internal_error").inc(taken.spans)
        finally:
            await self.transport.release(taken)
            self._slots.release()


def _host_of(cfg: Any, kind: str) -> str:
    from pipeline.config import parse_endpoint

    sub = getattr(cfg, "grpc" if kind == "otlp_grpc" else "http", None)
    return parse_endpoint(sub.endpoint)[0] if sub is not None else "127.0.0.1"
