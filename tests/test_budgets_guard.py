"""BudgetGuard: applications are refused (429) once their budget is spent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.budgets.guard import BudgetExceeded, BudgetGuard
from pipeline.budgets.model import build_budgets
from sinks.budgets import BudgetsSink
from tests.budget_helpers import T0, Clock, batch, context, llm_span, sink_config
from tests.services import free_port


@pytest.fixture
async def env(tmp_path: Path, redis_service):  # type: ignore[no-untyped-def]
    clock = Clock()
    cfg = sink_config(redis_service.url, key_prefix=f"g{uuid.uuid4().hex[:8]}")
    sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
    await sink.start()  # publishes the budget definitions the guard reads
    guard = BudgetGuard(redis_service.url, key_prefix=cfg.key_prefix, clock=clock)
    yield sink, guard, clock
    guard.close()
    await guard.aclose()
    await sink.close()


async def test_application_loop_is_refused_once_its_budget_is_spent(env) -> None:  # type: ignore[no-untyped-def]
    sink, guard, _clock = env
    calls = 0
    decision = None
    for _ in range(50):
        decision = guard.check(user="bob", feature="summarize", tier="free")
        if not decision.allowed:
            break
        calls += 1  # the LLM call happens; its span reaches tracepipe
        await sink.write(batch([llm_span(cost=0.03, user="bob", tier="free", feature="summarize")]))
    assert decision is not None and not decision.allowed
    assert calls == 4  # $0.03 x 4 = $0.12 >= the free tier's $0.10/day
    assert decision.status_code == 429
    assert decision.retry_after == 14 * 3600  # T0 is 10:00 UTC: the day resets at midnight
    assert decision.headers() == {"Retry-After": str(14 * 3600)}
    [blocked] = decision.blocked
    assert (blocked.budget, blocked.spent_usd, blocked.limit_usd) == ("user_daily", pytest.approx(0.12), 0.1)
    assert "user_daily" in decision.reason
    # Another user of the same tier is still served.
    assert guard.check(user="other", tier="free").allowed


async def test_estimated_cost_refuses_a_call_that_would_pass_the_limit(env) -> None:  # type: ignore[no-untyped-def]
    sink, guard, _clock = env
    await sink.write(batch([llm_span(cost=0.08, user="cat", tier="free")]))
    assert guard.check(user="cat", tier="free").allowed
    assert guard.check(user="cat", tier="free", estimated_usd=0.01).allowed
    refused = guard.check(user="cat", tier="free", estimated_usd=0.05)
    assert not refused.allowed and refused.status_code == 429


async def test_limit_of_a_fresh_id_comes_from_its_tier(env) -> None:  # type: ignore[no-untyped-def]
    _sink, guard, _clock = env
    d = guard.check(user="new-user", tier="free", estimated_usd=0.5)
    assert not d.allowed and d.blocked[0].limit_usd == pytest.approx(0.10)
    assert guard.check(user="new-user", tier="pro", estimated_usd=0.5).allowed


async def test_decorator_and_context_managers_raise_when_refused(env) -> None:  # type: ignore[no-untyped-def]
    sink, guard, _clock = env
    await sink.write(batch([llm_span(cost=0.5, user="dan", tier="free")]))

    @guard.limit(user=lambda args: args["user_id"], tier="free")
    def summarize(user_id: str, text: str) -> str:
        return text[:5]

    @guard.limit(user=lambda args: args["user_id"], tier="free")
    async def chat(user_id: str) -> str:
        return "ok"

    assert summarize("eve", "hello world") == "hello"
    with pytest.raises(BudgetExceeded) as info:
        summarize("dan", "hello world")
    assert info.value.status_code == 429 and info.value.retry_after == 14 * 3600
    assert await chat("eve") == "ok"
    with pytest.raises(BudgetExceeded):
        await chat("dan")
    async with guard.enforce(user="eve", tier="free") as decision:
        assert decision.allowed
    with pytest.raises(BudgetExceeded):
        async with guard.enforce(user="dan", tier="free"):
            pytest.fail("the body must not run")
    with pytest.raises(BudgetExceeded), guard.enforce(user="dan", tier="free"):
        pytest.fail("the body must not run")


async def test_a_new_day_lifts_the_refusal(env) -> None:  # type: ignore[no-untyped-def]
    sink, guard, clock = env
    await sink.write(batch([llm_span(cost=0.5, user="fin", tier="free")]))
    assert not (await guard.acheck(user="fin", tier="free")).allowed
    clock.t = T0 + 86400
    assert (await guard.acheck(user="fin", tier="free")).allowed


async def test_combined_scope_budget_applies_when_both_values_are_given(env) -> None:  # type: ignore[no-untyped-def]
    sink, guard, _clock = env
    spans = [
        llm_span(cost=0.0, tokens=(600_000, 500_000), user=f"u{i}", tenant="globex", feature="search") for i in range(1)
    ]
    await sink.write(batch(spans))
    assert guard.check(tenant="globex").allowed  # no budget is scoped to the tenant alone
    d = guard.check(tenant="globex", feature="search")
    assert not d.allowed and d.blocked[0].budget == "tenant_feature_monthly"


async def test_guard_with_budgets_from_config_and_unreachable_redis(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cfg = sink_config(url)
    open_guard = BudgetGuard(redis=cfg.redis, budgets=cfg)
    d = open_guard.check(user="x", tier="free")
    assert d.allowed and "unavailable" in d.reason
    closed = BudgetGuard(url, budgets=build_budgets(cfg), fail_open=False)
    d = closed.check(user="x", tier="free")
    assert not d.allowed and d.status_code == 503
    d = await closed.acheck(user="x", tier="free")
    assert d.status_code == 503
    open_guard.close()
    closed.close()
    await closed.aclose()


async def test_flask_middleware_example_answers_429_with_retry_after(env) -> None:  # type: ignore[no-untyped-def]
    import flask

    sink, guard, _clock = env
    await sink.write(batch([llm_span(cost=0.5, user="gil", tier="free", feature="summarize")]))

    # The README's Flask example, verbatim in substance.
    app = flask.Flask("demo")

    @app.before_request
    def check_budget():  # type: ignore[no-untyped-def]
        user_id = flask.request.headers.get("X-User-ID")
        decision = guard.check(user=user_id, tier=flask.request.headers.get("X-User-Tier"), feature="summarize")
        if not decision.allowed:
            return flask.jsonify(decision.to_json()), decision.status_code, decision.headers()
        return None

    @app.post("/api/summarize")
    def summarize():  # type: ignore[no-untyped-def]
        return {"summary": "..."}

    client = app.test_client()
    ok = client.post("/api/summarize", headers={"X-User-ID": "hana", "X-User-Tier": "free"})
    assert ok.status_code == 200
    refused = client.post("/api/summarize", headers={"X-User-ID": "gil", "X-User-Tier": "free"})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(14 * 3600)
    body = refused.get_json()
    assert body["allowed"] is False and body["blocked"][0]["budget"] == "user_daily"


async def test_guard_forgets_a_budget_removed_from_the_config(tmp_path: Path, redis_service) -> None:
    clock = Clock()
    prefix = f"g{uuid.uuid4().hex[:8]}"
    cfg = sink_config(redis_service.url, key_prefix=prefix)
    sink = BudgetsSink("budgets", cfg, context(tmp_path), clock=clock)
    await sink.start()
    await sink.write(batch([llm_span(cost=0.5, user="ray", tier="free")]))
    guard = BudgetGuard(redis_service.url, key_prefix=prefix, clock=clock, definitions_ttl=0)
    assert not guard.check(user="ray", tier="free").allowed
    await sink.close()
    # The sink restarts without user_daily: the guard stops enforcing it.
    smaller = cfg.model_copy(update={"budgets": {"tf": cfg.budgets["tenant_feature_monthly"]}})
    again = BudgetsSink("budgets", smaller, context(tmp_path), clock=clock)
    await again.start()
    assert guard.check(user="ray", tier="free").allowed
    guard.close()
    await again.close()
