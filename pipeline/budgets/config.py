"""Config models of the budgets sink: budgets, limits, tiers, the Redis connection.

A budget counts spend (USD, from `gen_ai.usage.cost_usd`) and tokens (input + output)
per id of a scope (a user, a tenant, an end customer, a session, a feature, a model, or a
combination such as `customer+feature`) over a calendar period (hour, day, week, month) in a time zone.
Its limit is, in order: the override for the id, the limit of the span's tier, the
budget's default `limit`. A null limit means unlimited (counted, never enforced); a tier
or override that gives only `usd` (or only `tokens`) keeps the other from `limit`.
"""

from __future__ import annotations

import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from pipeline.component import ComponentConfig

Period = Literal["hour", "day", "week", "month"]

# Scope dimension -> where its value comes from (documented; extraction lives in accounting.py).
SCOPE_SOURCES: dict[str, str] = {
    "user": "user.id",
    "tenant": "tenant.id (the resource's, stamped from the auth token, else the span's)",
    "customer": "customer.id (the application's end customer)",
    "session": "session.id, else gen_ai.conversation.id",
    "feature": "app.feature",
    "model": "gen_ai.request.model, else gen_ai.response.model (the model identity)",
    "response_model": "gen_ai.response.model, else gen_ai.request.model (the billed, dated name)",
    "provider": "gen_ai.provider.name",
    "service": "the span's service.name",
}
SCOPE_ALIASES: dict[str, str] = {}  # customer is its own dimension (customer.id), no longer tenant
GLOBAL_SCOPE = "global"
GLOBAL_ID = "all"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_scope(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'customer+feature' -> ('customer', 'feature'); 'global' -> (). Raises ValueError."""
    parts = value.split("+") if isinstance(value, str) else list(value)
    dims: list[str] = []
    for raw in parts:
        p = raw.strip().lower()
        p = SCOPE_ALIASES.get(p, p)
        if p == GLOBAL_SCOPE and len(parts) == 1:
            return ()
        if p not in SCOPE_SOURCES:
            known = ", ".join([*SCOPE_SOURCES, *SCOPE_ALIASES, GLOBAL_SCOPE])
            raise ValueError(f"unknown scope {raw!r} (known: {known}; combine with '+')")
        if p in dims:
            raise ValueError(f"scope {raw!r} is listed twice")
        dims.append(p)
    if not dims:
        raise ValueError("scope is empty")
    return tuple(dims)


def scope_name(dims: tuple[str, ...]) -> str:
    return "+".join(dims) if dims else GLOBAL_SCOPE


def check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as UTC or Europe/Paris)") from None
    return value


class Limit(ComponentConfig):
    """A spending limit per period: USD and/or tokens (input + output). Both absent = unlimited."""

    usd: float | None = Field(None, ge=0, description="Most USD per period.")
    tokens: int | None = Field(None, ge=0, description="Most tokens (input + output) per period.")

    @property
    def unlimited(self) -> bool:
        return self.usd is None and self.tokens is None


class BudgetConfig(ComponentConfig):
    scope: str | list[str] = Field(
        ...,
        description="What is counted: user, tenant, customer, session, feature, model, response_model, provider, "
        "service, a combination joined by '+' (customer+feature), or global.",
    )
    period: Period = Field("day", description="Calendar period the counters reset on.")
    time_zone: str | None = Field(None, description="IANA time zone of the period boundaries; default the sink's.")
    limit: Limit | None = Field(None, description="Limit for ids with no override and no tier limit.")
    tiers: dict[str, Limit | None] = Field(
        default_factory=dict,
        description="Per-tier limits (value of `tier_attribute`, e.g. free/pro/enterprise); null = unlimited; "
        "a field left out (usd or tokens) is taken from `limit`.",
    )
    overrides: dict[str, Limit | None] = Field(
        default_factory=dict,
        description="Per-id limits (combined ids are joined with '/', e.g. 'acme/chat'); null = unlimited; "
        "a field left out is taken from `limit`.",
    )
    thresholds: list[float] | None = Field(
        None, description="Fractions of the limit that raise an alert once per period; default the sink's."
    )
    tier_attribute: str = Field("user.tier", description="Span attribute holding the tier.")

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str | list[str]) -> str | list[str]:
        parse_scope(v)
        return v

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return v if v is None else check_time_zone(v)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[float] | None) -> list[float] | None:
        return v if v is None else _check_thresholds(v)

    @property
    def dims(self) -> tuple[str, ...]:
        return parse_scope(self.scope)


def _check_thresholds(v: list[float]) -> list[float]:
    for t in v:
        if not 0 < t <= 10:
            raise ValueError(f"threshold {t} must be a fraction of the limit in (0, 10] (0.8 = 80%)")
    return sorted(set(v))


class RedisTlsConfig(ComponentConfig):
    ca_file: str | None = Field(None, description="CA bundle to verify the server.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Client private key (mutual TLS).")
    check_hostname: bool = Field(True, description="Verify the server's host name.")
    verify: bool = Field(True, description="Verify the server certificate at all.")


class RedisSentinelConfig(ComponentConfig):
    hosts: list[str] = Field(..., min_length=1, description="Sentinels as HOST:PORT.")
    service_name: str = Field(..., description="Name of the monitored master.")
    password: str | None = Field(None, description="Password of the sentinels themselves.")


class RedisConfig(ComponentConfig):
    url: str = Field(
        ...,
        description="redis://[user:pass@]host:port/db, rediss:// for TLS, or unix:///path.sock. "
        "With `sentinel`, only the db and credentials of the URL are used.",
    )
    username: str | None = Field(None, description="ACL user (overrides the URL's).")
    password: str | None = Field(None, description="Password (overrides the URL's); use ${ENV} substitution.")
    tls: RedisTlsConfig | None = Field(None, description="TLS options (implied by rediss://).")
    sentinel: RedisSentinelConfig | None = Field(None, description="Find the master through Redis Sentinel.")
    cluster: bool = Field(False, description="Redis Cluster: one script per budget (keys share a hash tag).")
    socket_timeout: float = Field(2.0, gt=0, description="Seconds per command before the sink retries.")
    connect_timeout: float = Field(2.0, gt=0, description="Seconds to connect.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @model_validator(mode="after")
    def _one_topology(self) -> RedisConfig:
        if self.cluster and self.sentinel is not None:
            raise ValueError("choose either cluster or sentinel, not both")
        return self


class LocalStoreConfig(ComponentConfig):
    path: str | None = Field(
        None,
        description="Snapshot file of the local store; default <data_dir>/budgets/<sink>.json. "
        "Set `persist: false` to keep counters in memory only.",
    )
    persist: bool = Field(True, description="Snapshot counters so a restart keeps the current periods.")
    snapshot_interval: float = Field(5.0, gt=0, description="Seconds between snapshots (and one at close).")


class BudgetsSinkConfig(ComponentConfig):
    """The `budgets` sink. Without `redis` it uses an in-process store with the same semantics."""

    redis: RedisConfig | None = Field(None, description="Where counters live; null = local in-process store.")
    local: LocalStoreConfig = Field(default_factory=LocalStoreConfig, description="The store used without redis.")
    key_prefix: str = Field("tracepipe:budget", description="Prefix of every Redis key.")
    time_zone: str = Field("UTC", description="Default IANA time zone of period boundaries.")
    thresholds: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 1.0], description="Default alert thresholds (fractions of the limit)."
    )
    time_source: Literal["span", "arrival"] = Field(
        "span", description="Period of a span: by its end time (span) or by when the sink sees it (arrival)."
    )
    max_future_skew: float = Field(
        300.0, ge=0, description="Spans ending further than this in the future count at arrival time."
    )
    key_grace: float = Field(
        3600.0, ge=0, description="Seconds a counter outlives its period (late spans, `show` after reset)."
    )
    dedup_ttl: float = Field(
        21600.0,
        gt=0,
        description="Seconds a batch id is remembered, so redelivery does not count twice (~250 bytes of Redis "
        "memory per batch).",
    )
    unavailable: Literal["buffer", "block"] = Field(
        "buffer",
        description="While the store is unreachable: buffer increments in memory and ack (spans keep "
        "flowing; a buffer is lost if the process dies before the store returns), or block (fail the write "
        "so the runtime retries and the transport backs up).",
    )
    buffer_max_batches: int = Field(
        10_000, gt=0, description="Batches buffered while unreachable; beyond, writes fail (backpressure)."
    )
    top_n: int = Field(10, ge=1, le=100, description="Ranks exported in tracepipe_budget_utilization_ratio.")
    budgets: dict[str, BudgetConfig] = Field(..., min_length=1, description="Budgets by name.")

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_time_zone(v)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        return _check_thresholds(v)

    @field_validator("budgets")
    @classmethod
    def _names(cls, v: dict[str, BudgetConfig]) -> dict[str, BudgetConfig]:
        for name in v:
            if not _NAME_RE.match(name):
                raise ValueError(f"budget name {name!r}: use 1-64 letters, digits, '_', '-' or '.'")
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or "{" in v or "}" in v:
            raise ValueError("must be non-empty and without braces (they are Redis Cluster hash tags)")
        return v
