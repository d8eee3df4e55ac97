"""Shared helpers of the budgets tests: spans, a settable clock, a sink wired to a store."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.budgets.config import BudgetsSinkConfig
from pipeline.component import ComponentContext
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry

_ids = itertools.count(1)
# The injected clock runs ahead of the real one: Redis expires counter keys (EXPIREAT, period
# end + grace) on its own clock, so a test clock in the past would see its counters vanish.
# 2037 has 2026's calendar (23 November is a Monday); tests still never sleep.
T0 = datetime(2037, 11, 23, 10, 0, tzinfo=UTC).timestamp()


class Clock:
    """An injectable clock: tests move time, nothing sleeps."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def llm_span(
    *,
    cost: float | None = 0.01,
    tokens: tuple[int, int] = (100, 50),
    user: str | None = "alice",
    tenant: str | None = "acme",
    feature: str | None = "chat",
    tier: str | None = "free",
    model: str = "gpt-4o-mini",
    service: str = "support-bot",
    end: float = T0,
) -> Span:
    attrs: dict[str, Any] = {
        "gen_ai.request.model": model,
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
    }
    if cost is not None:
        attrs["gen_ai.usage.cost_usd"] = cost
    for k, v in (("user.id", user), ("tenant.id", tenant), ("app.feature", feature), ("user.tier", tier)):
        if v is not None:
            attrs[k] = v
    n = next(_ids)
    end_ns = int(end * 1e9)
    return Span(
        f"{n:032x}",
        f"{n:016x}",
        "chat gpt-4o-mini",
        end_ns - 1_000_000,
        end_ns,
        attributes=attrs,
        resource=Resource({"service.name": service}),
    )


def batch(spans: list[Span], batch_id: str | None = None) -> SpanBatch:
    return SpanBatch(spans=spans, batch_id=batch_id or f"b-{next(_ids)}")


def sink_config(redis_url: str | None = None, **overrides: Any) -> BudgetsSinkConfig:
    raw: dict[str, Any] = {
        "budgets": {
            "user_daily": {
                "scope": "user",
                "period": "day",
                "limit": {"usd": 1.0},
                "tiers": {"free": {"usd": 0.10}, "pro": {"usd": 10.0}, "enterprise": None},
                "overrides": {"vip": {"usd": 100.0}},
            },
            "tenant_feature_monthly": {"scope": "tenant+feature", "period": "month", "limit": {"tokens": 1_000_000}},
        },
    }
    if redis_url is not None:
        raw["redis"] = {"url": redis_url}
    elif "redis" not in overrides:
        raw["local"] = {"persist": False}
    raw.update(overrides)
    return BudgetsSinkConfig.model_validate(raw)


class Events(list):
    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        self.append((kind, event))


def context(tmp_path: Path, events: Events | None = None, sink_id: str = "budgets") -> ComponentContext:
    return ComponentContext(
        component_id=sink_id,
        telemetry=Telemetry(),
        state=MemoryStateStore(),
        data_dir=tmp_path,
        logger=logging.getLogger("test.budgets"),
        emit_event=events,
    )
