"""Budget stores: where counters live. Redis (shared by every worker) or local (in-process).

Both have the same semantics, the ones of the Lua script in `script.py`: a batch is
applied at most once per sink (its idempotency key is remembered `dedup_ttl` seconds),
counters expire `key_grace` after their period, each threshold fires once per period
and counter, and alerts of a batch whose reply was lost are handed back on its retry
until `ack_alerts` confirms they were emitted.

The local store keeps everything in this process and, when given a path, snapshots it
to a JSON file every `snapshot_interval` seconds and at close, so a restarted embedded
pipeline keeps its current periods (at most one interval of increments is lost on a
crash; batch ids of the embedded queue are unique per process, so old dedup entries
never collide with new batches).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipeline.budgets.model import (
    ApplyResult,
    Budget,
    CounterState,
    FiredAlert,
    Increment,
    KeyLayout,
    ResolvedLimit,
    defs_payload,
    stale_definitions,
)
from pipeline.budgets.script import ACK_ALERTS_LUA, APPLY_BATCH_LUA

Clock = Callable[[], float]
log = logging.getLogger("tracepipe.budgets")


class StoreUnavailable(Exception):
    """The store cannot be reached right now; retrying later is safe (writes are idempotent)."""


class StoreError(Exception):
    """The store refused the operation for a reason retrying will not fix (a bug, a foreign key type)."""


# Redis error replies that pass by themselves (failover, loading, memory pressure).
_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


class BudgetStore(Protocol):
    layout: KeyLayout

    async def start(self) -> None: ...

    async def apply(self, sink_id: str, batch_id: str, increments: list[Increment]) -> ApplyResult: ...

    async def ack_alerts(self, pending_keys: list[str]) -> None: ...

    async def read(self, keys: list[str]) -> list[CounterState | None]: ...

    async def publish_definitions(self, budgets: list[Budget], sink_id: str = "") -> None: ...

    async def read_definitions(self) -> list[Budget]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def _arg(inc: Increment) -> str:
    lim = inc.limit
    return (
        f"{inc.expire_at}|{inc.nusd}|{inc.tokens}|{inc.spans}|{lim.nusd}|{lim.tokens}|"
        f"{inc.budget.thresholds_arg}|{inc.tier}"
    )


def _parse_pending(pending: str | None) -> list[FiredAlert]:
    if not pending or pending == "1":
        return []
    return [
        FiredAlert(key=k, threshold=float(t), nusd=int(u), tokens=int(tok), limit=ResolvedLimit(int(lu), int(lt)))
        for k, t, u, tok, lu, lt in json.loads(pending)
    ]


# --- Redis ---------------------------------------------------------------------------


class RedisBudgetStore:
    """Counters in Redis, one script call per batch (per budget in Cluster mode, pipelined)."""

    def __init__(self, client: Any, layout: KeyLayout, *, dedup_ttl: float, cluster: bool = False) -> None:
        self.client = client
        self.layout = layout
        self.dedup_ttl = max(1, int(dedup_ttl))
        self.cluster = cluster
        self._apply = client.register_script(APPLY_BATCH_LUA)
        self._ack = client.register_script(ACK_ALERTS_LUA)
        self._ok = False

    @classmethod
    def from_config(cls, redis_cfg: Any, layout: KeyLayout, *, dedup_ttl: float) -> RedisBudgetStore:
        from pipeline.budgets.connection import connect_async

        return cls(connect_async(redis_cfg), layout, dedup_ttl=dedup_ttl, cluster=redis_cfg.cluster)

    async def start(self) -> None:
        await self.ping()

    async def _call(self, coro: Any) -> Any:
        from redis.exceptions import ConnectionError, RedisError, ResponseError, TimeoutError

        try:
            result = await coro
        except (ConnectionError, TimeoutError, OSError) as e:
            self._ok = False
            raise StoreUnavailable(f"redis: {type(e).__name__}: {e}") from e
        except ResponseError as e:
            if str(e).startswith(_TRANSIENT_REPLIES):
                self._ok = False
                raise StoreUnavailable(f"redis: {e}") from e
            raise StoreError(f"redis: {e}") from e
        except RedisError as e:
            self._ok = False
            raise StoreUnavailable(f"redis: {type(e).__name__}: {e}") from e
        self._ok = True
        return result

    async def apply(self, sink_id: str, batch_id: str, increments: list[Increment]) -> ApplyResult:
        if not increments:
            return ApplyResult(duplicate=False, totals=[], alerts=[])
        if not self.cluster:
            idem = self.layout.idem(sink_id, batch_id)
            res = await self._call(self._run(idem, increments))
            return _result([(idem, increments, res)])
        groups: dict[str, list[Increment]] = defaultdict(list)
        for inc in increments:
            groups[inc.budget.name].append(inc)
        calls = [(self.layout.idem(sink_id, batch_id, name), incs) for name, incs in groups.items()]
        results = await self._call(asyncio.gather(*(self._run(idem, incs) for idem, incs in calls)))
        parts = [(idem, incs, res) for (idem, incs), res in zip(calls, results, strict=True)]
        # Totals in the caller's order.
        merged = _result(parts)
        order = {id(inc): i for i, inc in enumerate(increments)}
        flat = [inc for _, incs, _ in parts for inc in incs]
        if not merged.duplicate and merged.totals:
            totals = [(0, 0)] * len(increments)
            for inc, tot in zip(flat, merged.totals, strict=True):
                totals[order[id(inc)]] = tot
            merged.totals = totals
        return merged

    def _run(self, idem: str, incs: list[Increment]) -> Any:
        args: list[Any] = [self.dedup_ttl]
        args.extend(_arg(inc) for inc in incs)
        return self._apply(keys=[idem, *(i.key for i in incs)], args=args)

    async def ack_alerts(self, pending_keys: list[str]) -> None:
        for k in pending_keys:
            await self._call(self._ack(keys=[k], args=[]))

    async def read(self, keys: list[str]) -> list[CounterState | None]:
        if not keys:
            return []
        if self.cluster:
            rows = await self._call(asyncio.gather(*(self.client.hgetall(k) for k in keys)))
        else:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            rows = await self._call(pipe.execute())
        return [CounterState.from_hash(r) for r in rows]

    async def publish_definitions(self, budgets: list[Budget], sink_id: str = "") -> None:
        """Budget definitions for guards; this sink's budgets no longer configured are removed."""
        payload = defs_payload(budgets, sink_id)
        current = await self._call(self.client.hgetall(self.layout.defs))
        stale = stale_definitions(current, payload, sink_id)
        if stale:
            await self._call(self.client.hdel(self.layout.defs, *stale))
        if payload:
            await self._call(self.client.hset(self.layout.defs, mapping=payload))

    async def read_definitions(self) -> list[Budget]:
        raw = await self._call(self.client.hgetall(self.layout.defs))
        return [Budget.from_json(json.loads(v)) for v in raw.values()]

    async def ping(self) -> bool:
        try:
            await self._call(self.client.ping())
        except StoreUnavailable:
            return False
        return True

    def ready(self) -> bool:
        return self._ok

    async def close(self) -> None:
        close = getattr(self.client, "aclose", None) or self.client.close
        await close()


def _result(parts: list[tuple[str, list[Increment], Any]]) -> ApplyResult:
    duplicate = True
    totals: list[tuple[int, int]] = []
    alerts: list[FiredAlert] = []
    pending_keys: list[str] = []
    for idem, _incs, res in parts:
        status, pending = int(res[0]), res[1]
        fired = _parse_pending(pending)
        if fired:
            alerts.extend(fired)
            pending_keys.append(idem)
        if status == 1:
            duplicate = False
            for pair in res[2].split(","):
                nusd, _, tok = pair.partition(" ")
                totals.append((int(nusd), int(tok)))
    return ApplyResult(duplicate=duplicate, totals=totals, alerts=alerts, pending_keys=pending_keys)


# --- local ---------------------------------------------------------------------------


class LocalBudgetStore:
    """In-process counters with the Redis store's semantics, optionally snapshotted to a file."""

    def __init__(
        self,
        layout: KeyLayout,
        *,
        dedup_ttl: float,
        path: Path | None = None,
        snapshot_interval: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self.layout = layout
        self.dedup_ttl = dedup_ttl
        self.path = path
        self.snapshot_interval = snapshot_interval
        self.clock = clock
        self.counters: dict[str, dict[str, Any]] = {}
        self.expires: dict[str, float] = {}
        self.idem: dict[str, tuple[float, str]] = {}
        self.defs: dict[str, str] = {}
        self._last_snapshot = 0.0
        self._last_sweep = 0.0
        self._dirty = False
        self._loaded = False

    async def start(self) -> None:
        """Load the snapshot once (the registry and the sink may both call this)."""
        if not self._loaded:
            self._loaded = True
            self.load()

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("budgets: cannot read snapshot %s (%s); starting empty", self.path, type(e).__name__)
            return
        self.counters = data.get("counters", {})
        self.expires = {k: float(v) for k, v in data.get("expires", {}).items()}
        self.idem = {k: (float(v[0]), str(v[1])) for k, v in data.get("idem", {}).items()}
        self.defs = data.get("defs", {})
        self._sweep(force=True)

    def snapshot(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        data = {"counters": self.counters, "expires": self.expires, "idem": self.idem, "defs": self.defs}
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)
        self._dirty = False
        self._last_snapshot = self.clock()

    def _sweep(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for k in [k for k, exp in self.expires.items() if exp <= now]:
            self.counters.pop(k, None)
            del self.expires[k]
        for k in [k for k, (exp, _) in self.idem.items() if exp <= now]:
            del self.idem[k]

    def _get(self, key: str) -> dict[str, Any] | None:
        exp = self.expires.get(key)
        if exp is not None and exp <= self.clock():
            self.counters.pop(key, None)
            del self.expires[key]
            return None
        return self.counters.get(key)

    async def apply(self, sink_id: str, batch_id: str, increments: list[Increment]) -> ApplyResult:
        if not increments:
            return ApplyResult(duplicate=False, totals=[], alerts=[])
        self._sweep()
        now = self.clock()
        idem = self.layout.idem(sink_id, batch_id)
        prev = self.idem.get(idem)
        if prev is not None and prev[0] > now:
            fired = _parse_pending(prev[1])
            return ApplyResult(duplicate=True, totals=[], alerts=fired, pending_keys=[idem] if fired else [])
        totals: list[tuple[int, int]] = []
        fired_rows: list[list[str]] = []
        for inc in increments:
            h = self._get(inc.key)
            if h is None:
                h = self.counters[inc.key] = {"nusd": 0, "tok": 0, "n": 0}
            h["nusd"] += inc.nusd
            h["tok"] += inc.tokens
            h["n"] += inc.spans
            lu, lt = inc.limit.nusd, inc.limit.tokens
            h["lu"], h["lt"], h["tier"] = lu, lt, inc.tier
            self.expires[inc.key] = float(inc.expire_at)
            for t in inc.budget.thresholds_arg.split(","):
                if not t:
                    continue
                thr = float(t)
                if (lu >= 0 and h["nusd"] >= thr * lu) or (lt >= 0 and h["tok"] >= thr * lt):
                    field = "a:" + t
                    if field not in h:
                        h[field] = 1
                        fired_rows.append([inc.key, t, str(h["nusd"]), str(h["tok"]), str(lu), str(lt)])
            totals.append((h["nusd"], h["tok"]))
        pending = json.dumps(fired_rows) if fired_rows else "1"
        self.idem[idem] = (now + self.dedup_ttl, pending)
        self._dirty = True
        if self.path is not None and now - self._last_snapshot >= self.snapshot_interval:
            self.snapshot()
        fired = _parse_pending(pending)
        return ApplyResult(duplicate=False, totals=totals, alerts=fired, pending_keys=[idem] if fired else [])

    async def ack_alerts(self, pending_keys: list[str]) -> None:
        for k in pending_keys:
            if k in self.idem:
                self.idem[k] = (self.idem[k][0], "1")

    async def read(self, keys: list[str]) -> list[CounterState | None]:
        return [CounterState.from_hash({k: str(v) for k, v in (self._get(key) or {}).items()}) for key in keys]

    async def publish_definitions(self, budgets: list[Budget], sink_id: str = "") -> None:
        payload = defs_payload(budgets, sink_id)
        for name in stale_definitions(self.defs, payload, sink_id):
            del self.defs[name]
        self.defs.update(payload)

    async def read_definitions(self) -> list[Budget]:
        return [Budget.from_json(json.loads(v)) for v in self.defs.values()]

    async def ping(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    async def close(self) -> None:
        if self._dirty:
            self.snapshot()
