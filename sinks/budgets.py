"""budgets sink: live spend and token counters per user, tenant, feature, model or service.

Every span carrying a cost or tokens increments the counters of each budget whose scope
values it has (see `pipeline/budgets/`), in one atomic server-side script per batch on
Redis (or an in-process store with the same semantics when no Redis URL is set).
Increments are idempotent per batch: the key is the sink id plus `batch.batch_id`, so a
redelivered or retried batch never counts twice. Place this sink in a pipeline that runs
before sampling (`from:` pipelines) so every span counts.

Crossing a threshold (50%, 80%, 100% of the limit by default) emits one `budget` event
per id, period and threshold through `ctx.emit_event` (else a log line), and counts it
in tracepipe_budget_threshold_crossings_total. tracepipe_budget_utilization_ratio gives
the top-N ratios per budget (never one series per id).

While the store is unreachable the sink buffers increments in memory and acks (default,
`unavailable: buffer`), draining them in order with the same idempotency keys when it
returns; or fails the write (`unavailable: block`) so the runtime retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections import deque
from typing import Any

from pipeline.budgets.accounting import Accountant, AccountingStats
from pipeline.budgets.config import BudgetsSinkConfig
from pipeline.budgets.gauges import UtilizationTracker
from pipeline.budgets.model import (
    NANO,
    NO_LIMIT,
    ApplyResult,
    Budget,
    FiredAlert,
    Increment,
    KeyLayout,
    ResolvedLimit,
    build_budgets,
    decode_id,
)
from pipeline.budgets.periods import iso, period_window
from pipeline.budgets.registry import make_store
from pipeline.budgets.status import utilization
from pipeline.budgets.store import BudgetStore, Clock, StoreError, StoreUnavailable
from pipeline.component import BaseSink, ComponentContext, Factory, SinkError
from pipeline.spans import SpanBatch
from pipeline.tenants import DEFAULT_TENANT


class BudgetsSink(BaseSink):
    def __init__(
        self,
        component_id: str,
        cfg: BudgetsSinkConfig,
        ctx: ComponentContext,
        *,
        clock: Clock = time.time,
        store: BudgetStore | None = None,
    ) -> None:
        super().__init__(component_id, ctx)
        self.cfg = cfg
        self.clock = clock
        self.layout = KeyLayout(cfg.key_prefix)
        self.budgets: list[Budget] = build_budgets(cfg)
        self._by_name = {b.name: b for b in self.budgets}
        self.accountant = Accountant(
            self.budgets,
            self.layout,
            time_source=cfg.time_source,
            max_future_skew=cfg.max_future_skew,
            key_grace=cfg.key_grace,
        )
        self.tracker = UtilizationTracker(ctx.telemetry, cfg.top_n)
        self._store = store
        self._owns_store = False
        self._defs_published = False
        self._buffer: deque[tuple[str, list[Increment]]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self._store_ok = True
        self._last_export = 0.0

    # --- lifecycle -------------------------------------------------------------------

    @property
    def store(self) -> BudgetStore:
        if self._store is None:
            registry = self.ctx.services.budgets
            shared = registry.store_for(self.component_id) if registry is not None else None
            if shared is not None:
                self._store = shared
            else:
                self._store = make_store(self.component_id, self.cfg, self.ctx.data_dir, clock=self.clock)
                self._owns_store = True
        return self._store

    async def start(self) -> None:
        store = self.store
        start = getattr(store, "start", None)
        if start is not None:
            try:
                await start()
            except StoreUnavailable:
                self.ctx.logger.warning("budgets sink %s: store unreachable at start; will retry", self.component_id)
        await self._publish_definitions()

    async def _publish_definitions(self) -> None:
        if self._defs_published:
            return
        try:
            await self.store.publish_definitions(self.budgets, self.component_id)
            self._defs_published = True
        except StoreUnavailable:
            pass

    def ready(self) -> bool:
        if self.cfg.unavailable == "buffer":
            return len(self._buffer) < self.cfg.buffer_max_batches
        return self._store_ok

    async def flush(self) -> None:
        if self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout=5.0)
        self.tracker.export()

    async def close(self) -> None:
        await self.flush()
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self._buffer:
            self.ctx.logger.error(
                "budgets sink %s: store still unreachable at close; increments of %d batch(es) are lost",
                self.component_id,
                len(self._buffer),
            )
        if self._owns_store and self._store is not None:
            await self._store.close()

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """True once every buffered batch reached the store (tests and shutdown)."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- the hot path ----------------------------------------------------------------

    async def write(self, batch: SpanBatch) -> None:
        now = self.clock()
        stats = AccountingStats()
        increments = self.accountant.collect(batch.spans, now, stats)
        if not increments:
            return
        if self._buffer:  # the store is known to be down: keep order, don't hammer it
            self._enqueue(batch.batch_id, increments)
            return
        try:
            result = await self.store.apply(self.component_id, batch.batch_id, increments)
        except StoreUnavailable as e:
            self._store_ok = False
            if self.cfg.unavailable == "block":
                raise SinkError(f"budget store unavailable: {e}", retryable=True) from None
            self._enqueue(batch.batch_id, increments)
            return
        except StoreError as e:
            raise SinkError(f"budget store refused the batch: {e}", retryable=False) from None
        self._store_ok = True
        # StoreUnavailable here means the alerts were emitted and only their confirmation
        # failed: a redelivery may repeat them (their event_id is stable).
        with contextlib.suppress(StoreUnavailable):
            await self._after_apply(result, increments)

    def _enqueue(self, batch_id: str, increments: list[Increment]) -> None:
        if len(self._buffer) >= self.cfg.buffer_max_batches:
            raise SinkError(
                f"budget store unavailable and {len(self._buffer)} batches already buffered", retryable=True
            )
        self._buffer.append((batch_id, increments))
        self._drained.clear()
        self.ctx.telemetry.budget_batches.labels(self.component_id, "buffered").inc()
        self.ctx.telemetry.budget_buffered_batches.labels(self.component_id).set(len(self._buffer))
        if self._drainer is None or self._drainer.done():
            self.ctx.logger.warning("budgets sink %s: store unreachable; buffering increments", self.component_id)
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        backoff = 0.05
        while self._buffer:
            batch_id, increments = self._buffer[0]
            try:
                result = await self.store.apply(self.component_id, batch_id, increments)
                await self._after_apply(result, increments)
            except StoreUnavailable:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except StoreError:
                self.ctx.logger.exception("budgets sink %s: store refused a buffered batch; dropped", self.component_id)
                self.ctx.telemetry.budget_batches.labels(self.component_id, "rejected").inc()
            except Exception:
                self.ctx.logger.exception("budgets sink %s: emitting alerts failed; retrying", self.component_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            self._buffer.popleft()
            self.ctx.telemetry.budget_buffered_batches.labels(self.component_id).set(len(self._buffer))
        self._store_ok = True
        self.ctx.logger.info("budgets sink %s: store reachable again; buffer drained", self.component_id)
        self._drained.set()

    async def _after_apply(self, result: ApplyResult, increments: list[Increment]) -> None:
        t = self.ctx.telemetry
        t.budget_batches.labels(self.component_id, "duplicate" if result.duplicate else "applied").inc()
        if not self._defs_published:
            await self._publish_definitions()
        for inc, (nusd, tokens) in zip(increments, result.totals, strict=False):
            ratio = utilization(nusd, tokens, inc.limit)
            if ratio is not None:
                tracked = inc.scope_id if inc.tenant == DEFAULT_TENANT else f"{inc.tenant}#{inc.scope_id}"
                self.tracker.observe(inc.budget.name, inc.period_start, tracked, min(ratio, 1e9))
        now = self.clock()
        if now - self._last_export >= 1.0:
            self._last_export = now
            self.tracker.export()
        if result.alerts:
            for alert in result.alerts:
                await self._emit(alert, now)
            await self.store.ack_alerts(result.pending_keys)

    async def _emit(self, alert: FiredAlert, now: float) -> None:
        event = self.alert_event(alert, now)
        if event is None:
            return
        threshold = f"{alert.threshold:g}"
        self.ctx.telemetry.budget_threshold_crossings.labels(event["budget"], threshold).inc()
        emit = self.ctx.emit_event
        if emit is None:
            # Never log ids or attribute values: budget, scope, period and threshold only.
            self.ctx.logger.warning(
                "budget %s (%s, %s): an id crossed %s%% of its limit",
                event["budget"],
                event["scope"],
                event["period"],
                f"{alert.threshold * 100:g}",
            )
            return
        out = emit("budget", event)
        if inspect.isawaitable(out):
            await out

    def alert_event(self, alert: FiredAlert, now: float) -> dict[str, Any] | None:
        """The event of a crossed threshold (key `<prefix>:{budget}:<start>:[<tenant>#]<id>`)."""
        parts = self.layout.split_counter(alert.key)
        if parts is None:
            return None
        name, start, tenant, id_ = parts
        b = self._by_name.get(name)
        if b is None:
            return None
        _s, end = period_window(b.period, b.tz, start)
        lim = alert.limit
        ratio = utilization(alert.nusd, alert.tokens, lim)
        usd_ratio = utilization(alert.nusd, 0, ResolvedLimit(lim.nusd, NO_LIMIT))
        tok_ratio = utilization(0, alert.tokens, ResolvedLimit(NO_LIMIT, lim.tokens))
        by_tokens = tok_ratio is not None and (usd_ratio is None or tok_ratio > usd_ratio)
        spent_usd = alert.nusd / NANO
        limit_usd = None if lim.nusd < 0 else lim.nusd / NANO
        limit_tokens = None if lim.tokens < 0 else lim.tokens
        what = f"{alert.tokens} of {limit_tokens} tokens" if by_tokens else f"${spent_usd:.4f} of ${limit_usd:.4f}"
        period_start, reset_at = iso(start, b.tz), iso(end, b.tz)
        return {
            # The alert path's common fields (pipeline/alerts): one-shot, so no fingerprint.
            "type": "budget.threshold",
            "rule": f"budget:{name}",
            "state": "firing",
            "severity": "critical" if alert.threshold >= 1.0 else "warning",
            "summary": f"{b.scope} {id_} reached {alert.threshold * 100:g}% of budget {name} ({b.period}): {what}",
            "key": dict(zip(b.dims, decode_id(id_), strict=False)) if b.dims else {"global": "all"},
            "metric": "tokens" if by_tokens else "spend_usd",
            "observed": alert.tokens if by_tokens else spent_usd,
            "kind": "budget",
            "window": {"start": period_start, "end": reset_at},
            "event_id": f"budget:{self.component_id}:{name}:{start}:"
            + ("" if tenant == DEFAULT_TENANT else f"{tenant}#")
            + f"{id_}:{alert.threshold:g}",
            "tenant": tenant,
            # Budget specifics.
            "sink": self.component_id,
            "budget": name,
            "scope": b.scope,
            "id": id_,
            "period": b.period,
            "time_zone": b.time_zone,
            "period_start": period_start,
            "reset_at": reset_at,
            "threshold": alert.threshold,
            "spent_usd": spent_usd,
            "limit_usd": limit_usd,
            "spent_tokens": alert.tokens,
            "limit_tokens": limit_tokens,
            "utilization": None if ratio is None else min(ratio, 1e9),
            "time": iso(now),
        }


def _create(component_id: str, cfg: BudgetsSinkConfig, ctx: ComponentContext) -> BudgetsSink:
    return BudgetsSink(component_id, cfg, ctx)


factory: Factory[BudgetsSinkConfig, BudgetsSink] = Factory(
    type="budgets",
    config_model=BudgetsSinkConfig,
    create=_create,
    description="Live spend/token budgets per user, tenant, feature, model or service in Redis.",
)
