"""Budgets as the sink, the API, the CLI and the guard see them, and the Redis key layout.

Keys (a Redis hash per budget, period and id; the budget name is the Cluster hash tag):

    <prefix>:{<budget>}:<period start, epoch s>:<id>   fields: nusd (nano-USD, integer),
    <prefix>:{<budget>}:<period start>:<tenant>#<id>   the same for a tenant other than "default"
        tok (tokens), n (spans), lu / lt (limit in nano-USD / tokens, -1 = none),
        tier, a:<threshold> (set once when that threshold was crossed)
    <prefix>:{<budget>}:idem:<sink id>:<batch id>      a batch already applied (per budget
        group in Cluster mode; `<prefix>:idem:...` otherwise)
    <prefix>:defs                                      hash: budget name -> JSON definition

Counters are per tracepipe tenant (pipeline/tenants.py): two tenants with the same user id never
share one; tenant "default" keeps the single-tenant key, so existing counters carry on. `#` never
appears in an encoded id or tenant, so the tenant part is unambiguous (`split_counter_key`).

Counters expire `key_grace` seconds after their period ends. Money is counted in
integer nano-USD so concurrent increments add up exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from pipeline.budgets.config import GLOBAL_ID, BudgetConfig, BudgetsSinkConfig, Limit, parse_scope, scope_name
from pipeline.budgets.periods import PeriodClock
from pipeline.tenants import DEFAULT_TENANT

NANO = 1_000_000_000
NO_LIMIT = -1


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def encode_id(values: tuple[str, ...]) -> str:
    """('acme', 'chat') -> 'acme/chat'; parts are percent-encoded so '/' inside a value survives."""
    if not values:
        return GLOBAL_ID
    return "/".join(quote(v, safe="@.-_~+=,;!$&'()*") for v in values)


def decode_id(value: str) -> tuple[str, ...]:
    return tuple(unquote(p) for p in value.split("/"))


@dataclass(frozen=True)
class ResolvedLimit:
    nusd: int = NO_LIMIT
    tokens: int = NO_LIMIT

    @classmethod
    def of(cls, limit: Limit | None) -> ResolvedLimit:
        if limit is None:
            return UNLIMITED
        return cls(
            NO_LIMIT if limit.usd is None else to_nano(limit.usd),
            NO_LIMIT if limit.tokens is None else int(limit.tokens),
        )

    @classmethod
    def inheriting(cls, limit: Limit | None, base: ResolvedLimit) -> ResolvedLimit:
        """A tier or override limit: fields it leaves out come from the budget's `limit`."""
        if limit is None:
            return UNLIMITED
        own = cls.of(limit)
        given = limit.model_fields_set
        return cls(
            own.nusd if "usd" in given else base.nusd,
            own.tokens if "tokens" in given else base.tokens,
        )

    @property
    def unlimited(self) -> bool:
        return self.nusd < 0 and self.tokens < 0


UNLIMITED = ResolvedLimit()


@dataclass
class Budget:
    """One configured budget, ready for the hot path."""

    name: str
    dims: tuple[str, ...]
    period: str
    time_zone: str
    thresholds: tuple[float, ...]
    default: ResolvedLimit
    tiers: dict[str, ResolvedLimit]
    overrides: dict[str, ResolvedLimit]
    tier_attribute: str = "user.tier"
    tz: ZoneInfo = field(init=False, repr=False)
    clock: PeriodClock = field(init=False, repr=False)
    thresholds_arg: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tz = ZoneInfo(self.time_zone)
        self.clock = PeriodClock(self.period, self.tz)
        self.thresholds_arg = ",".join(repr(t) for t in self.thresholds)

    @property
    def scope(self) -> str:
        return scope_name(self.dims)

    def limit_for(self, id_: str, tier: str | None) -> ResolvedLimit:
        over = self.overrides.get(id_)
        if over is not None:
            return over
        if tier is not None:
            t = self.tiers.get(tier)
            if t is not None:
                return t
        return self.default

    def to_json(self) -> dict[str, Any]:
        def lim(r: ResolvedLimit) -> dict[str, Any]:
            return {"nusd": r.nusd, "tokens": r.tokens}

        return {
            "name": self.name,
            "scope": list(self.dims),
            "period": self.period,
            "time_zone": self.time_zone,
            "thresholds": list(self.thresholds),
            "default": lim(self.default),
            "tiers": {k: lim(v) for k, v in self.tiers.items()},
            "overrides": {k: lim(v) for k, v in self.overrides.items()},
            "tier_attribute": self.tier_attribute,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Budget:
        def lim(x: dict[str, Any]) -> ResolvedLimit:
            return ResolvedLimit(int(x["nusd"]), int(x["tokens"]))

        return cls(
            name=d["name"],
            dims=tuple(d["scope"]),
            period=d["period"],
            time_zone=d["time_zone"],
            thresholds=tuple(d["thresholds"]),
            default=lim(d["default"]),
            tiers={k: lim(v) for k, v in d["tiers"].items()},
            overrides={k: lim(v) for k, v in d["overrides"].items()},
            tier_attribute=d.get("tier_attribute", "user.tier"),
        )


def build_budgets(cfg: BudgetsSinkConfig) -> list[Budget]:
    out = []
    for name, b in cfg.budgets.items():
        out.append(budget_from_config(name, b, cfg))
    return out


def budget_from_config(name: str, b: BudgetConfig, cfg: BudgetsSinkConfig) -> Budget:
    # An unknown tier falls back to the default limit; a tier listed as null is unlimited;
    # a tier or override that sets only `usd` (or `tokens`) keeps the default's other field.
    default = ResolvedLimit.of(b.limit)
    tiers = {k: ResolvedLimit.inheriting(v, default) for k, v in b.tiers.items()}
    overrides = {k: ResolvedLimit.inheriting(v, default) for k, v in b.overrides.items()}
    return Budget(
        name=name,
        dims=parse_scope(b.scope),
        period=b.period,
        time_zone=b.time_zone or cfg.time_zone,
        thresholds=tuple(b.thresholds if b.thresholds is not None else cfg.thresholds),
        default=default,
        tiers=tiers,
        overrides=overrides,
        tier_attribute=b.tier_attribute,
    )


@dataclass(frozen=True)
class KeyLayout:
    prefix: str

    def counter(self, budget: str, period_start: int, id_: str, tenant: str = DEFAULT_TENANT) -> str:
        if tenant == DEFAULT_TENANT:
            return f"{self.prefix}:{{{budget}}}:{period_start}:{id_}"
        return f"{self.prefix}:{{{budget}}}:{period_start}:{quote(tenant, safe='')}#{id_}"

    def split_counter(self, key: str) -> tuple[str, int, str, str] | None:
        """A counter key as (budget, period start, tenant, id); None for other keys."""
        head = f"{self.prefix}:{{"
        if not key.startswith(head):
            return None
        name, sep, tail = key[len(head) :].partition("}:")
        start_s, _, rest = tail.partition(":")
        if not sep or not start_s.isdigit() or not rest:
            return None
        tenant_part, hash_, id_ = rest.partition("#")
        if not hash_:
            return name, int(start_s), DEFAULT_TENANT, rest
        return name, int(start_s), unquote(tenant_part), id_

    def idem(self, sink_id: str, batch_id: str, budget: str | None = None) -> str:
        token = batch_token(sink_id, batch_id)
        if budget is None:
            return f"{self.prefix}:idem:{token}"
        return f"{self.prefix}:{{{budget}}}:idem:{token}"

    @property
    def defs(self) -> str:
        return f"{self.prefix}:defs"


def batch_token(sink_id: str, batch_id: str) -> str:
    raw = f"{sink_id}:{batch_id}"
    if len(raw) <= 120:
        return raw
    return hashlib.sha256(raw.encode()).hexdigest()


def defs_payload(budgets: list[Budget], sink_id: str = "") -> dict[str, str]:
    return {b.name: json.dumps({**b.to_json(), "sink": sink_id}, sort_keys=True) for b in budgets}


def stale_definitions(current: dict[str, str], payload: dict[str, str], sink_id: str) -> list[str]:
    """Published budgets of this sink that its config no longer has."""
    stale = []
    for name, raw in current.items():
        if name in payload:
            continue
        try:
            owner = json.loads(raw).get("sink", "")
        except ValueError:
            continue
        if owner == sink_id:
            stale.append(name)
    return stale


@dataclass
class Increment:
    """What one batch adds to one counter, with what the script needs to judge thresholds."""

    key: str
    budget: Budget
    scope_id: str
    period_start: int
    period_end: int
    expire_at: int
    nusd: int
    tokens: int
    spans: int
    limit: ResolvedLimit
    tier: str
    tenant: str = DEFAULT_TENANT


@dataclass
class FiredAlert:
    """A threshold crossed for the first time in its period, as the store reported it."""

    key: str
    threshold: float
    nusd: int
    tokens: int
    limit: ResolvedLimit


@dataclass
class ApplyResult:
    duplicate: bool
    totals: list[tuple[int, int]]  # (nusd, tokens) after the increment, per Increment (empty if duplicate)
    alerts: list[FiredAlert]  # fired by this batch, or still pending from a previous attempt of it
    pending_keys: list[str] = field(default_factory=list)  # idempotency keys holding those alerts


@dataclass
class CounterState:
    """A counter as read back."""

    nusd: int = 0
    tokens: int = 0
    spans: int = 0
    limit: ResolvedLimit | None = None
    tier: str = ""
    crossed: tuple[float, ...] = ()

    @classmethod
    def from_hash(cls, h: dict[str, str] | dict[bytes, bytes] | None) -> CounterState | None:
        if not h:
            return None
        d = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in h.items()
        }
        limit = None
        if "lu" in d or "lt" in d:
            limit = ResolvedLimit(int(d.get("lu", NO_LIMIT)), int(d.get("lt", NO_LIMIT)))
        crossed = tuple(sorted(float(k[2:]) for k in d if k.startswith("a:")))
        return cls(
            nusd=int(d.get("nusd", 0)),
            tokens=int(d.get("tok", 0)),
            spans=int(d.get("n", 0)),
            limit=limit,
            tier=d.get("tier", ""),
            crossed=crossed,
        )
