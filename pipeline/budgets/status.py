"""The read side: where a scope and id stand in every budget and period.

Shared by the HTTP API, the CLI and the application guard. A counter carries the limit
the sink resolved for its id (override, tier, default); before any spend is counted the
limit is resolved from the definition (with the caller's tier when given).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.budgets.config import parse_scope, scope_name
from pipeline.budgets.model import NANO, Budget, CounterState, KeyLayout, ResolvedLimit, decode_id, encode_id
from pipeline.budgets.periods import iso, period_window
from pipeline.tenants import DEFAULT_TENANT


@dataclass
class BudgetStatus:
    budget: str
    scope: str
    id: str
    period: str
    time_zone: str
    period_start: str
    reset_at: str
    reset_in_seconds: float
    spent_usd: float
    limit_usd: float | None
    remaining_usd: float | None
    spent_tokens: int
    limit_tokens: int | None
    remaining_tokens: int | None
    spans: int
    utilization: float | None
    exceeded: bool
    tier: str | None
    thresholds_crossed: list[float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def resolve_query(budgets: list[Budget], scope: str, id_: str) -> list[tuple[Budget, str]]:
    """Budgets with that scope (any order of its parts) and the id in each one's order.

    Raises ValueError on an unknown scope or an id with the wrong number of parts."""
    dims = parse_scope(scope)
    parts = decode_id(id_) if dims else ()
    if len(parts) != len(dims):
        raise ValueError(f"scope {scope_name(dims)} needs {len(dims)} id part(s) joined by '/', got {len(parts)}")
    by_dim = dict(zip(dims, parts, strict=True))
    out = []
    for b in budgets:
        if set(b.dims) == set(dims):
            out.append((b, encode_id(tuple(by_dim[d] for d in b.dims))))
    return out


def utilization(nusd: int, tokens: int, limit: ResolvedLimit) -> float | None:
    ratios = []
    if limit.nusd >= 0:
        ratios.append(nusd / limit.nusd if limit.nusd else (float("inf") if nusd else 0.0))
    if limit.tokens >= 0:
        ratios.append(tokens / limit.tokens if limit.tokens else (float("inf") if tokens else 0.0))
    return max(ratios) if ratios else None


def is_exceeded(nusd: int, tokens: int, limit: ResolvedLimit, add_nusd: int = 0, add_tokens: int = 0) -> bool:
    """Spent reached the limit, or would pass it with the estimated next call."""
    if limit.nusd >= 0 and (nusd >= limit.nusd or (add_nusd > 0 and nusd + add_nusd > limit.nusd)):
        return True
    return limit.tokens >= 0 and (tokens >= limit.tokens or (add_tokens > 0 and tokens + add_tokens > limit.tokens))


def window_now(b: Budget, now: float) -> tuple[int, int]:
    return period_window(b.period, b.tz, now)


def make_status(
    b: Budget, id_: str, counter: CounterState | None, start: int, end: int, now: float, tier: str | None = None
) -> BudgetStatus:
    c = counter or CounterState()
    limit = c.limit if c.limit is not None else b.limit_for(id_, tier)
    util = utilization(c.nusd, c.tokens, limit)
    return BudgetStatus(
        budget=b.name,
        scope=b.scope,
        id=id_,
        period=b.period,
        time_zone=b.time_zone,
        period_start=iso(start, b.tz),
        reset_at=iso(end, b.tz),
        reset_in_seconds=round(max(0.0, end - now), 3),
        spent_usd=c.nusd / NANO,
        limit_usd=None if limit.nusd < 0 else limit.nusd / NANO,
        remaining_usd=None if limit.nusd < 0 else max(0, limit.nusd - c.nusd) / NANO,
        spent_tokens=c.tokens,
        limit_tokens=None if limit.tokens < 0 else limit.tokens,
        remaining_tokens=None if limit.tokens < 0 else max(0, limit.tokens - c.tokens),
        spans=c.spans,
        utilization=None if util is None else (round(util, 6) if util != float("inf") else 1e9),
        exceeded=is_exceeded(c.nusd, c.tokens, limit),
        tier=c.tier or tier or None,
        thresholds_crossed=list(c.crossed),
    )


async def read_status(
    store: Any,
    budgets: list[Budget],
    scope: str,
    id_: str,
    now: float,
    tier: str | None = None,
    tenant: str = DEFAULT_TENANT,
) -> list[BudgetStatus]:
    """Status of `id_` of `tenant` in every budget of `scope`, current period. Raises ValueError on a
    bad query, StoreUnavailable when the store cannot be read."""
    matches = resolve_query(budgets, scope, id_)
    layout: KeyLayout = store.layout
    windows = [window_now(b, now) for b, _ in matches]
    keys = [
        layout.counter(b.name, start, bid, tenant) for (b, bid), (start, _e) in zip(matches, windows, strict=True)
    ]
    counters = await store.read(keys)
    return [
        make_status(b, bid, c, start, end, now, tier)
        for (b, bid), (start, end), c in zip(matches, windows, counters, strict=True)
    ]
