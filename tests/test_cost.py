"""cost: prices match genai-prices' own answers and hand-computed ones; overrides, discounts,
client costs and unknown models behave as documented."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from pydantic import ValidationError

from pipeline.component import ComponentContext
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.cost import CostConfig, CostProcessor

NOW_NS = int(datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp() * 1e9)


def make_proc(telemetry: Telemetry | None = None, **options: Any) -> CostProcessor:
    ctx = ComponentContext("cost", telemetry or Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t.cost"))
    return CostProcessor("cost", CostConfig(**options), ctx)


def span(attrs: dict[str, Any], start_ns: int = NOW_NS) -> Span:
    return Span("0" * 32, "1" * 16, "chat", start_ns, start_ns + 1, attributes=dict(attrs))


def genai(
    model: str,
    inp: int,
    out: int,
    cr: int = 0,
    cw: int = 0,
    provider: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    a: dict[str, Any] = {
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
    }
    if provider:
        a["gen_ai.provider.name"] = provider
    if cr:
        a["gen_ai.usage.cache_read.input_tokens"] = cr
    if cw:
        a["gen_ai.usage.cache_creation.input_tokens"] = cw
    a.update(extra)
    return a


def price(proc: CostProcessor, attrs: dict[str, Any], start_ns: int = NOW_NS) -> dict[str, Any]:
    s = span(attrs, start_ns)
    proc.process(SpanBatch([s], "b"))
    return s.attributes


def reference(model: str, provider_id: str | None, inp: int, out: int, cr: int = 0, cw: int = 0, **kw: Any) -> float:
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cr or None, cache_write_tokens=cw or None)
    return float(calc_price(usage, model, provider_id=provider_id, **kw).total_price)


# (semconv provider, model, genai-prices provider id, input incl. cache, output, cache read, cache write)
CASES = [
    ("openai", "gpt-4o", "openai", 1200, 80, 0, 0),
    ("openai", "gpt-4o-mini-2024-07-18", "openai", 1200, 80, 1024, 0),
    ("openai", "gpt-4.1-nano", "openai", 5000, 300, 4096, 0),
    ("openai", "o3-mini", "openai", 200, 1500, 0, 0),
    ("openai", "text-embedding-3-small", "openai", 2, 0, 0, 0),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropic", 10_000, 500, 6000, 2000),
    ("anthropic", "claude-3-haiku-20240307", "anthropic", 100, 20, 0, 50),
    ("anthropic", "claude-opus-4-6", "anthropic", 3000, 200, 1000, 0),
    ("gcp.gemini", "gemini-1.5-flash", "google", 1000, 100, 0, 0),
    ("gcp.gemini", "gemini-2.5-pro", "google", 150_000, 1000, 10_000, 0),
    ("gcp.gemini", "gemini-2.5-pro", "google", 250_000, 1000, 10_000, 0),  # above the 200k tier
    ("gcp.vertex_ai", "gemini-1.5-pro", "google", 300_000, 10, 0, 0),
    ("mistral_ai", "mistral-large-latest", "mistral", 700, 70, 0, 0),
    ("cohere", "command-r", "cohere", 900, 90, 0, 0),
    ("groq", "llama-3.1-8b-instant", "groq", 900, 90, 0, 0),
    ("deepseek", "deepseek-chat", "deepseek", 900, 90, 100, 0),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0", "aws", 900, 90, 0, 0),
    (None, "gpt-4o-mini", None, 321, 123, 0, 0),
]


@pytest.mark.parametrize(("provider", "model", "gp_provider", "inp", "out", "cr", "cw"), CASES)
def test_prices_match_genai_prices(
    provider: str | None, model: str, gp_provider: str | None, inp: int, out: int, cr: int, cw: int
) -> None:
    proc = make_proc()
    a = price(proc, genai(model, inp, out, cr, cw, provider))
    when = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
    expected = reference(model, gp_provider, inp, out, cr, cw, genai_request_timestamp=when)
    assert a["tracepipe.cost.source"] == "genai-prices"
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # A second span of the same model is priced from the cache, with the same answer.
    again = price(proc, genai(model, inp, out, cr, cw, provider))
    assert again["gen_ai.usage.cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_tiered_price_changes_above_the_threshold() -> None:
    proc = make_proc()
    below = price(proc, genai("gemini-2.5-pro", 200_000, 0, provider="gcp.gemini"))["gen_ai.usage.cost_usd"]
    above = price(proc, genai("gemini-2.5-pro", 200_001, 0, provider="gcp.gemini"))["gen_ai.usage.cost_usd"]
    assert below == pytest.approx(200_000 * 1.25 / 1e6)
    assert above == pytest.approx(200_001 * 2.5 / 1e6)


def test_hand_computed_examples() -> None:
    proc = make_proc()
    # gpt-4o: $2.50 / MTok input, $1.25 cached input, $10 output.
    a = price(proc, genai("gpt-4o", 1000, 100, provider="openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(1000 * 2.5e-6 + 100 * 10e-6)
    a = price(proc, genai("gpt-4o", 1000, 100, cr=600, provider="openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(400 * 2.5e-6 + 600 * 1.25e-6 + 100 * 10e-6)
    # claude-3-5-sonnet: $3 input, $0.30 cache read, $3.75 cache write, $15 output.
    a = price(proc, genai("claude-3-5-sonnet-20241022", 10_000, 500, cr=6000, cw=2000, provider="anthropic"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(2000 * 3e-6 + 6000 * 0.3e-6 + 2000 * 3.75e-6 + 500 * 15e-6)


def test_input_reported_without_cache_tokens_is_taken_as_exclusive() -> None:
    # Anthropic's API reports input_tokens WITHOUT cache tokens: 100 fresh + 5000 cached.
    a = price(make_proc(), genai("claude-3-5-sonnet-20241022", 100, 10, cr=5000, provider="anthropic"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(100 * 3e-6 + 5000 * 0.3e-6 + 10 * 15e-6)


def test_dated_and_time_of_day_prices_follow_the_span_time() -> None:
    proc = make_proc()
    peak = int(datetime(2026, 11, 23, 12, 0, tzinfo=UTC).timestamp() * 1e9)
    off_peak = int(datetime(2026, 11, 23, 20, 0, tzinfo=UTC).timestamp() * 1e9)
    for start in (peak, off_peak):
        a = price(proc, genai("deepseek-chat", 10_000, 1000, provider="deepseek"), start)
        when = datetime.fromtimestamp(start / 1e9, tz=UTC)
        assert a["gen_ai.usage.cost_usd"] == pytest.approx(
            reference("deepseek-chat", "deepseek", 10_000, 1000, genai_request_timestamp=when)
        )
    assert (
        price(proc, genai("deepseek-chat", 10_000, 0, provider="deepseek"), peak)["gen_ai.usage.cost_usd"]
        != (price(proc, genai("deepseek-chat", 10_000, 0, provider="deepseek"), off_peak)["gen_ai.usage.cost_usd"])
    )
    old = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1e9)
    a = price(proc, genai("o3", 1000, 1000, provider="openai"), old)
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(
        reference("o3", "openai", 1000, 1000, genai_request_timestamp=datetime(2025, 1, 1, tzinfo=UTC))
    )
    assert (
        a["gen_ai.usage.cost_usd"] != price(proc, genai("o3", 1000, 1000, provider="openai"))["gen_ai.usage.cost_usd"]
    )


def test_service_tier_variant_prices() -> None:
    proc = make_proc()
    for tier in ("default", "priority", "flex"):
        a = price(proc, genai("gpt-5", 1000, 1000, provider="openai", **{"openai.response.service_tier": tier}))
        expected = float(
            calc_price(
                Usage(input_tokens=1000, output_tokens=1000),
                "gpt-5",
                provider_id="openai",
                price_context={"service_tier": tier},
            ).total_price
        )
        assert a["gen_ai.usage.cost_usd"] == pytest.approx(expected), tier


def test_unknown_model_is_flagged_not_zero(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry()
    proc = make_proc(telemetry)
    spans = [span(genai("my-private-model", 10, 10, provider="openai", **{"user.id": "secret-user"})) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="t.cost"):
        proc.process(SpanBatch(spans, "b1"))
        proc.process(SpanBatch([span(genai("my-private-model", 1, 1))], "b2"))
    for s in spans:
        assert "gen_ai.usage.cost_usd" not in s.attributes
        assert s.attributes["tracepipe.cost.unpriced"] is True
    value = telemetry.registry.get_sample_value("tracepipe_llm_unpriced_spans_total", {"model": "my-private-model"})
    assert value == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "my-private-model" in lines[0]
    assert "secret-user" not in lines[0] and "openai" not in lines[0]


def test_known_provider_does_not_borrow_another_providers_price() -> None:
    # A self-hosted llama behind an OpenAI-compatible API is not priced at some host's list price.
    a = price(make_proc(), genai("llama-3.1-8b-instant", 10, 10, provider="openai"))
    assert a.get("tracepipe.cost.unpriced") is True
    a = price(make_proc(), genai("llama-3.1-8b-instant", 10, 10, provider="ollama"))
    assert a.get("tracepipe.cost.unpriced") is True


def test_response_model_preferred_request_model_as_fallback() -> None:
    proc = make_proc()
    a = price(proc, genai("gpt-4o", 1000, 0, provider="openai", **{"gen_ai.response.model": "gpt-4o-mini"}))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(reference("gpt-4o-mini", "openai", 1000, 0))
    a = price(proc, genai("gpt-4o", 1000, 0, provider="openai", **{"gen_ai.response.model": "gpt-4o-custom-xyz"}))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(1000 * 2.5e-6)


def test_client_cost_trusted_by_default() -> None:
    a = price(make_proc(), genai("gpt-4o", 1000, 100, provider="openai", **{"gen_ai.usage.cost_usd": 0.42}))
    assert a["gen_ai.usage.cost_usd"] == 0.42
    assert a["tracepipe.cost.source"] == "client"


def test_client_cost_as_string_becomes_a_float() -> None:
    a = price(make_proc(), genai("gpt-4o", 1000, 100, **{"gen_ai.usage.cost_usd": "0.25"}))
    assert a["gen_ai.usage.cost_usd"] == 0.25
    assert a["tracepipe.cost.source"] == "client"


def test_client_cost_replaced_when_not_trusted_but_kept_if_unpriceable() -> None:
    proc = make_proc(trust_client_cost=False)
    a = price(proc, genai("gpt-4o", 1000, 100, provider="openai", **{"gen_ai.usage.cost_usd": 0.42}))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(0.0035)
    assert a["tracepipe.cost.source"] == "genai-prices"
    a = price(proc, genai("mystery", 1000, 100, **{"gen_ai.usage.cost_usd": 0.42}))
    assert a["gen_ai.usage.cost_usd"] == 0.42
    assert a["tracepipe.cost.source"] == "client"
    assert "tracepipe.cost.unpriced" not in a


def test_span_carried_per_token_prices() -> None:
    attrs = genai("house-model", 1000, 200, cost_per_prompt_token=1e-6, cost_per_completion_token="3e-6")
    a = price(make_proc(), attrs)
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(1000e-6 + 600e-6)
    assert a["tracepipe.cost.source"] == "span_rates"
    a = price(make_proc(trust_client_cost=False), attrs)
    assert a["tracepipe.cost.unpriced"] is True


def test_overrides_exact_glob_per_token_and_price_as() -> None:
    proc = make_proc(
        overrides=[
            {"model": "acme-llm-7b", "input_per_mtok": 0.2, "output_per_mtok": 0.4, "per_request": 0.001},
            {"model": "ft:gpt-4o-mini:*", "price_as": {"model": "gpt-4o-mini", "provider": "openai"}, "multiplier": 2},
            {"model": "seed-model", "cost_per_prompt_token": 0.00001, "cost_per_completion_token": 0.00003},
            {"model": "gpt-4o", "provider": "azure.ai.openai", "input_per_mtok": 1.0, "output_per_mtok": 1.0},
        ]
    )
    a = price(proc, genai("ACME-LLM-7B", 1_000_000, 1_000_000, cr=500_000))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(0.2 + 0.4 + 0.001)  # cache reads default to input
    assert a["tracepipe.cost.source"] == "override"
    a = price(proc, genai("ft:gpt-4o-mini:acme::abc123", 1000, 100, provider="openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(2 * reference("gpt-4o-mini", "openai", 1000, 100))
    a = price(proc, genai("seed-model", 10, 10))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(10 * 0.00001 + 10 * 0.00003)
    a = price(proc, genai("gpt-4o", 1_000_000, 0, provider="azure.ai.openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(1.0)
    a = price(proc, genai("gpt-4o", 1_000_000, 0, provider="openai"))  # override scoped to azure
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(2.5)


def test_discounts_multiply_list_prices() -> None:
    proc = make_proc(
        discounts=[
            {"provider": "openai", "model": "gpt-4o-mini*", "multiplier": 0.5},
            {"provider": "openai", "multiplier": 0.8},
        ]
    )
    a = price(proc, genai("gpt-4o-mini", 1000, 100, provider="openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(0.5 * reference("gpt-4o-mini", "openai", 1000, 100))
    a = price(proc, genai("gpt-4o", 1000, 100, provider="openai"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(0.8 * 0.0035)
    a = price(proc, genai("claude-3-haiku-20240307", 1000, 100, provider="anthropic"))
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(reference("claude-3-haiku-20240307", "anthropic", 1000, 100))


def test_non_genai_agent_and_usage_less_spans_are_left_alone() -> None:
    proc = make_proc()
    plain = {"http.method": "GET"}
    agent = genai("gpt-4o", 5000, 500, **{"gen_ai.operation.name": "invoke_agent"})
    no_usage = {"gen_ai.request.model": "mystery"}
    spans = [span(plain), span(agent), span(no_usage)]
    proc.process(SpanBatch(spans, "b"))
    assert spans[0].attributes == plain
    assert spans[1].attributes == agent
    assert spans[2].attributes == no_usage


def test_small_caches_stay_correct() -> None:
    proc = make_proc(cache_size=2)
    for _ in range(3):
        for model in ("gpt-4o", "gpt-4o-mini", "claude-3-haiku-20240307", "gemini-2.5-pro"):
            for inp in (10, 20, 30):
                a = price(proc, genai(model, inp, 5))
                assert a["gen_ai.usage.cost_usd"] == pytest.approx(reference(model, None, inp, 5), rel=1e-9)
    assert len(proc._pricing) <= 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overrides": [{"model": "x"}]}, "needs prices"),
        ({"overrides": [{"model": "x", "input_per_mtok": 1, "cost_per_prompt_token": 1}]}, "not both"),
        ({"overrides": [{"model": "x", "input_per_mtok": -1}]}, "greater than or equal"),
        ({"discounts": [{"multiplier": 0.5}]}, "provider or a model"),
        ({"discounts": [{"provider": "openai", "multiplier": 0}]}, "greater than 0"),
        ({"trust_client_cost": "perhaps"}, "valid boolean"),
    ],
)
def test_bad_config_is_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CostConfig(**options)


def _listed_models() -> list[tuple[str, str]]:
    from genai_prices.data import providers

    major = {"openai", "anthropic", "google", "mistral", "deepseek", "groq", "x-ai", "cohere", "aws", "azure"}
    return [(p.id, m.id) for p in providers if p.id in major for m in p.models]


def test_every_model_of_the_major_providers_matches_genai_prices() -> None:
    """The per-token coefficients derived from genai-prices reproduce calc_price for every listed model."""
    proc = make_proc()
    when = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
    checked = 0
    for provider_id, model_id in _listed_models():
        for inp, out, cr, cw in ((1234, 567, 0, 0), (250_000, 1000, 100_000, 20_000)):
            try:
                expected = reference(model_id, provider_id, inp, out, cr, cw, genai_request_timestamp=when)
            except (LookupError, ValueError):
                continue  # not addressable by its id, or not a token-priced model
            a = price(proc, genai(model_id, inp, out, cr, cw, provider=provider_id))
            assert a.get("gen_ai.usage.cost_usd") == pytest.approx(expected, rel=1e-9, abs=1e-12), (
                provider_id,
                model_id,
                inp,
            )
            checked += 1
    assert checked > 500, checked


def test_a_price_genai_prices_cannot_evaluate_flags_the_span_instead_of_failing_the_batch() -> None:
    from decimal import Decimal

    from genai_prices.types import ClauseEquals, ModelInfo, ModelPrice, Provider, Tier, TieredPrices

    from processors.cost import GenaiPricesPrice

    bad = ModelInfo(
        id="broken",
        match=ClauseEquals(equals="broken"),
        prices=ModelPrice(input_mtok=TieredPrices(base=Decimal(-1), tiers=[Tier(start=10, price=Decimal(1))])),
    )
    proc = make_proc()
    proc._pricing[("x", "broken")] = GenaiPricesPrice(bad, Provider(id="x", name="x", api_pattern="x"), 1.0)
    spans = [span(genai("broken", 10, 1, provider="x")), span(genai("gpt-4o", 10, 1, provider="openai"))]
    proc.process(SpanBatch(spans, "b"))
    assert spans[0].attributes["tracepipe.cost.unpriced"] is True
    assert "gen_ai.usage.cost_usd" not in spans[0].attributes
    assert spans[1].attributes["gen_ai.usage.cost_usd"] == pytest.approx(10 * 2.5e-6 + 10e-6)


def _tiered_model_prices() -> list[tuple[str, object]]:
    from genai_prices.data_snapshot import get_snapshot
    from genai_prices.types import ModelPrice, TieredPrices

    out = []
    for prov in get_snapshot().providers:
        for m in prov.models:
            for p in m.prices if isinstance(m.prices, list) else [m.prices]:
                mp = p if isinstance(p, ModelPrice) else getattr(p, "prices", None)
                if isinstance(mp, ModelPrice) and any(isinstance(v, TieredPrices) for v in mp.__dict__.values()):
                    out.append((f"{prov.id}/{m.id}", mp))
    return out


def test_tiered_prices_per_band_equal_genai_prices_for_every_tiered_model() -> None:
    # Every tiered price in the genai-prices snapshot, priced around each tier start (at, below,
    # just above), with and without cache tokens: the per-band coefficients agree with calc_price.
    import random

    from genai_prices.types import TieredPrices, Usage

    from processors.cost import TieredLinearPrice

    rng = random.Random(5)
    models = _tiered_model_prices()
    assert len(models) > 20  # the snapshot has many; an empty list would prove nothing
    for name, mp in models:
        fast = TieredLinearPrice(mp, 1.0)
        starts = sorted({t.start for v in mp.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers})
        for inp in [0, 1, 1000, *(x + d for x in starts for d in (-1, 0, 1, 5000))]:
            if inp < 0:
                continue
            out = rng.randrange(0, 5000)
            cr = rng.randrange(0, inp // 2 + 1)
            cw = rng.randrange(0, (inp - cr) // 2 + 1)
            kw = {"input_tokens": inp, "output_tokens": out}
            if cr:
                kw["cache_read_tokens"] = cr
            if cw:
                kw["cache_write_tokens"] = cw
            want = float(mp.calc_price(Usage(**kw))["total_price"])
            assert fast.cost(inp, out, cr, cw) == pytest.approx(want, rel=1e-9, abs=1e-12), (name, inp, out, cr, cw)
