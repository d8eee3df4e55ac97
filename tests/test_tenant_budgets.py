"""Budget counters per tenant in Redis: separate keys, readable per tenant, forgotten by user or tenant."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.budgets.forget import forget_counters
from pipeline.budgets.guard import BudgetGuard
from pipeline.budgets.model import KeyLayout
from pipeline.budgets.status import read_status
from pipeline.deletion import ForgetRequest
from pipeline.spans import Resource, Span
from sinks.budgets import BudgetsSink
from tests.budget_helpers import Clock, Events, batch, context, llm_span, sink_config


def _in(tenant: str | None, span: Span) -> Span:
    """The span as sent by `tenant`'s ingest token (resource tenant.id; None: no tenant, "default")."""
    span.resource = Resource({"service.name": "support-bot", **({"tenant.id": tenant} if tenant else {})})
    return span


@pytest.mark.parametrize(
    ("tenant", "id_"), [("default", "u1"), ("acme", "u1"), ("a:b#c/d e", "x%2Fy/chat"), ("t", "all")]
)
def test_counter_keys_split_back_into_budget_period_tenant_and_id(tenant: str, id_: str) -> None:
    layout = KeyLayout("tp:budget")
    key = layout.counter("user_daily", 1_700_000_000, id_, tenant)
    assert layout.split_counter(key) == ("user_daily", 1_700_000_000, tenant, id_)
    if tenant == "default":
        assert key == f"tp:budget:{{user_daily}}:1700000000:{id_}"  # single-tenant keys are unchanged


async def test_two_tenants_same_user_separate_counters_and_forget(tmp_path: Path, redis_service) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    clock = Clock()
    events = Events()
    sink = BudgetsSink("budgets", sink_config(redis_service.url, key_prefix=prefix), context(tmp_path, events),
                       clock=clock)
    await sink.start()
    try:
        spans = [_in("acme", llm_span(cost=0.3, user="u1", tier=None)),
                 _in("acme", llm_span(cost=0.3, user="u1", tier=None)),
                 _in("globex", llm_span(cost=0.03, user="u1", tier=None)),
                 _in(None, llm_span(cost=0.01, user="u1", tier=None))]
        await sink.write(batch(spans))
        spent = {}
        for tenant in ("acme", "globex", "default"):
            [day] = [s for s in await read_status(sink.store, sink.budgets, "user", "u1", clock(), tenant=tenant)
                     if s.budget == "user_daily"]
            spent[tenant] = round(day.spent_usd, 6)
        assert spent == {"acme": 0.6, "globex": 0.03, "default": 0.01}
        # acme's u1 crossed 50 % of 1 USD and its alert says so; globex's u1 (3 %) fired nothing.
        fired = [e for _k, e in events]
        assert fired and {e["tenant"] for e in fired} == {"acme"} and {e["id"] for e in fired} == {"u1"}
        # The application guard reads its tenant's counters.
        guard = BudgetGuard(redis_service.url, key_prefix=prefix, budgets=sink.budgets, clock=clock, tenant="acme")
        decision = guard.check(user="u1", estimated_usd=0.5)
        assert not decision.allowed and decision.blocked[0].spent_usd == pytest.approx(0.6)
        other = BudgetGuard(redis_service.url, key_prefix=prefix, budgets=sink.budgets, clock=clock, tenant="globex")
        assert other.check(user="u1", estimated_usd=0.5).allowed
        other.close()
        guard.close()

        removed = await forget_counters(sink.store, sink.budgets, ForgetRequest("user", "u1", "acme"))
        assert removed == 1  # acme's user_daily of u1 (the customer+feature budget has no user: kept)
        left = {
            t: [s.spent_usd for s in await read_status(sink.store, sink.budgets, "user", "u1", clock(), tenant=t)]
            for t in ("acme", "globex")
        }
        assert left["acme"] == [0.0] and left["globex"] == [pytest.approx(0.03)]
        removed = await forget_counters(sink.store, sink.budgets, ForgetRequest("tenant", "globex"))
        assert removed == 2  # globex's user_daily and tenant_feature_monthly counters
        keys = [k.decode() if isinstance(k, bytes) else k
                async for k in sink.store.client.scan_iter(match=f"{prefix}:{{*")]
        assert keys and all("globex" not in k and "acme#u1" not in k for k in keys)
    finally:
        await sink.close()
