"""Forgetting budget counters: a user's (in every budget with a `user` dimension) or a tenant's.

Counter keys name their budget, tenant and id (pipeline/budgets/model.py), so the counters of a
user or tenant are found by their keys: every key of the local store, or a SCAN over the key
prefix in Redis. Counters hold no trace ids: forgetting a trace touches nothing here. Budgets no
longer configured are not searched for users (their dimensions are unknown); tenant requests
remove their counters all the same.
"""

from __future__ import annotations

from typing import Any

from pipeline.budgets.model import Budget, KeyLayout, decode_id
from pipeline.deletion import ForgetHook, ForgetRequest
from pipeline.services import Services

SCAN_COUNT = 1000


def counter_matches(layout: KeyLayout, budgets: dict[str, Budget], key: str, req: ForgetRequest) -> bool:
    """Whether the counter `key` belongs to what `req` forgets."""
    parts = layout.split_counter(key)
    if parts is None:
        return False
    name, _start, tenant, id_ = parts
    if req.kind == "tenant":
        return tenant == req.value
    if req.kind != "user" or (req.tenant is not None and tenant != req.tenant):
        return False
    b = budgets.get(name)
    if b is None or "user" not in b.dims:
        return False
    values = decode_id(id_)
    return len(values) == len(b.dims) and values[b.dims.index("user")] == req.value


async def forget_counters(store: Any, budgets: list[Budget], req: ForgetRequest) -> int:
    """Delete the matching counters of a Local or Redis budget store; returns how many."""
    if req.kind == "trace":
        return 0
    by_name = {b.name: b for b in budgets}
    layout: KeyLayout = store.layout
    if hasattr(store, "counters"):  # LocalBudgetStore
        keys = [k for k in store.counters if counter_matches(layout, by_name, k, req)]
        for k in keys:
            store.counters.pop(k, None)
            store.expires.pop(k, None)
        if keys:
            store._dirty = True
            store.snapshot()
        return len(keys)
    client = store.client
    keys = []
    async for raw in client.scan_iter(match=f"{layout.prefix}:{{*", count=SCAN_COUNT):
        k = raw.decode() if isinstance(raw, bytes) else raw
        if counter_matches(layout, by_name, k, req):
            keys.append(k)
    removed = 0
    for k in keys:  # one key per call: counters of different budgets live in different Cluster slots
        removed += int(await store._call(client.delete(k)))
    return removed


def forget_hook(config: Any, services: Services) -> tuple[str, ForgetHook] | None:
    registry = services.budgets
    if registry is None:
        return None

    async def hook(req: ForgetRequest) -> dict[str, int]:
        if req.kind == "trace":
            return {}
        total = 0
        for entry in registry.entries.values():
            total += await forget_counters(entry.store, entry.budgets, req)
        return {"counters": total}

    return "budgets", hook
