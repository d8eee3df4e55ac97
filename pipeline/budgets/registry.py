"""The budgets of a running tracepipe, for the sinks, the HTTP API and the CLI.

`build_budget_store(config)` is called once by a runtime. It returns a
`BudgetRegistry` (or None when no `budgets` sink is configured) that the runtime puts
in both `ComponentContext.services.budgets` (so each budgets sink uses the registry's
store for its id: in embedded mode the API then reads the very counters the sink
writes) and `ApiContext.services.budgets`, and closes at shutdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.budgets.config import BudgetsSinkConfig
from pipeline.budgets.model import Budget, KeyLayout, build_budgets
from pipeline.budgets.status import BudgetStatus, read_status, resolve_query
from pipeline.budgets.store import BudgetStore, Clock, LocalBudgetStore, RedisBudgetStore
from pipeline.tenants import DEFAULT_TENANT

SINK_TYPE = "budgets"


def make_store(sink_id: str, cfg: BudgetsSinkConfig, data_dir: Path, *, clock: Clock = time.time) -> BudgetStore:
    """The store a budgets sink config asks for: Redis when `redis` is set, else local."""
    layout = KeyLayout(cfg.key_prefix)
    if cfg.redis is not None:
        return RedisBudgetStore.from_config(cfg.redis, layout, dedup_ttl=cfg.dedup_ttl)
    path = None
    if cfg.local.persist:
        safe = sink_id.replace("/", "_")
        path = Path(cfg.local.path) if cfg.local.path else data_dir / "budgets" / f"{safe}.json"
    return LocalBudgetStore(
        layout, dedup_ttl=cfg.dedup_ttl, path=path, snapshot_interval=cfg.local.snapshot_interval, clock=clock
    )


@dataclass
class BudgetSinkEntry:
    sink_id: str
    config: BudgetsSinkConfig
    budgets: list[Budget]
    store: BudgetStore


class BudgetRegistry:
    """Every budgets sink's store and budgets; answers status queries across them."""

    def __init__(self, entries: list[BudgetSinkEntry], *, clock: Clock = time.time) -> None:
        self.entries = {e.sink_id: e for e in entries}
        self.clock = clock
        self._started = False

    def store_for(self, sink_id: str) -> BudgetStore | None:
        e = self.entries.get(sink_id)
        return e.store if e else None

    def budgets(self) -> list[tuple[str, Budget]]:
        return [(e.sink_id, b) for e in self.entries.values() for b in e.budgets]

    async def start(self) -> None:
        """Load local snapshots (idempotent; sinks call it too)."""
        if self._started:
            return
        self._started = True
        for e in self.entries.values():
            if isinstance(e.store, LocalBudgetStore):
                await e.store.start()

    async def status(
        self, scope: str, id_: str, tier: str | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[BudgetStatus]:
        """Every budget of `scope` for `id_` of `tenant` (ValueError on a bad query; StoreUnavailable)."""
        now = self.clock()
        out: list[BudgetStatus] = []
        for e in self.entries.values():
            out.extend(await read_status(e.store, e.budgets, scope, id_, now, tier, tenant))
        return out

    async def check(
        self,
        values: dict[str, str],
        tier: str | None = None,
        estimated_usd: float = 0.0,
        estimated_tokens: int = 0,
        tenant: str = DEFAULT_TENANT,
    ) -> Any:
        """The guard's decision (pipeline.budgets.guard.Decision) for `tenant`'s counters, computed here,
        for `GET /api/budgets/check`."""
        from pipeline.budgets.guard import decide, plan_checks

        now = self.clock()
        plan = []
        counters = []
        for e in self.entries.values():
            part = plan_checks(e.budgets, e.store.layout, values, now, tenant)
            plan.extend(part)
            counters.extend(await e.store.read([p[2] for p in part]))
        return decide(plan, counters, now, tier, estimated_usd, estimated_tokens)

    def knows_scope(self, scope: str, id_: str) -> bool:
        return any(resolve_query(e.budgets, scope, id_) for e in self.entries.values())

    def definitions(self) -> list[dict[str, Any]]:
        return [{"sink": sid, **b.to_json()} for sid, b in self.budgets()]

    async def close(self) -> None:
        for e in self.entries.values():
            await e.store.close()


def build_budget_store(config: Any, *, clock: Clock = time.time) -> BudgetRegistry | None:
    """A registry over every `budgets` sink of a validated `pipeline.config.Config`, or None."""
    entries = []
    for spec in config.sinks_of_type(SINK_TYPE):
        cfg: BudgetsSinkConfig = spec.config
        store = make_store(spec.id, cfg, Path(config.data_dir), clock=clock)
        entries.append(BudgetSinkEntry(spec.id, cfg, build_budgets(cfg), store))
    if not entries:
        return None
    return BudgetRegistry(entries, clock=clock)
