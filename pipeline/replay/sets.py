"""What the API and the CLI's local path do with replay sets, over a TraceQueries (pipeline/query/traces.py).

- `create_set(queries, tenant, name, filters)`: capture and store; ValueError when the name is
  taken (`SetExists`) or nothing matches (`NothingCaptured`).
- `record_results(...)`: store a run's validated results.
- `compare_set(queries, tenant, name, run_id)`: the comparison of one run (default: the latest).
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.replay import store
from pipeline.replay.capture import Filters, capture
from pipeline.replay.compare import comparison


class SetExists(ValueError):
    """A replay set of that name exists for the tenant."""


class NothingCaptured(ValueError):
    """No stored LLM call matches the filters."""


class UnknownRun(ValueError):
    """The set has no run of that id (or no run at all)."""


async def create_set(queries: Any, tenant: str, name: str, filters: Filters,
                     now_ns: int | None = None) -> dict[str, Any]:
    if await store.set_exists(queries, tenant, name):
        raise SetExists(f"name: a replay set {name!r} exists (pick another name)")
    now = time.time_ns() if now_ns is None else now_ns
    items = await capture(queries, tenant, filters, now)
    if not items:
        raise NothingCaptured("no stored LLM call with input messages matches the filters")
    await store.insert_items(queries, tenant, name, filters.as_dict(), now, items)
    cost = [it["cost_usd"] for it in items if it["cost_usd"] is not None]
    return {"name": name, "items": len(items), "filters": filters.as_dict(), "created_ns": now,
            "original_cost_usd": sum(cost) if cost else None, "models": sorted({it["model"] or "" for it in items})}


async def record_results(queries: Any, tenant: str, name: str, run_id: str, results: list[dict[str, Any]]) -> int:
    await store.insert_results(queries, tenant, name, run_id, results, time.time_ns())
    return len(results)


async def compare_set(queries: Any, tenant: str, name: str, run_id: str | None = None) -> dict[str, Any] | None:
    """None when the set does not exist; UnknownRun when it has no such run."""
    items = await store.get_items(queries, tenant, name)
    if not items:
        return None
    runs = await store.list_runs(queries, tenant, name)
    if not runs:
        raise UnknownRun(f"replay set {name!r} has no run yet (tracepipe replay run {name} ...)")
    chosen = runs[-1] if run_id is None else next((r for r in runs if r["run_id"] == run_id), None)
    if chosen is None:
        raise UnknownRun(f"run: replay set {name!r} has no run {run_id!r}")
    results = await store.get_results(queries, tenant, name, chosen["run_id"])
    return comparison(name, chosen, items, results)
