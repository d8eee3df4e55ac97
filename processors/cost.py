"""cost: price every GenAI span in USD (`gen_ai.usage.cost_usd`).

What it does
    For each span carrying a model (`gen_ai.response.model`, else `gen_ai.request.model`)
    and token counts, sets `gen_ai.usage.cost_usd` (float, USD) and
    `tracepipe.cost.source`, one of:

    - `client`       the span already carried a cost and `trust_client_cost` is true
                     (the default: a client that reports cost usually knows its real,
                     negotiated bill, e.g. OpenRouter's `usage.cost`);
    - `override`     a YAML override matched the model (custom, self-hosted, fine-tuned);
    - `span_rates`   the span carries per-token prices (`cost_per_prompt_token`,
                     `cost_per_completion_token`, as the Lumina-style SDKs send);
    - `genai-prices` the maintained `genai-prices` package priced it (provider and model
                     matching, cache read/write prices, tiers, dated price changes,
                     service-tier variants), times a configured discount multiplier.

    A span that has token counts but whose model nobody can price gets no cost (the
    attribute stays absent, never 0), `tracepipe.cost.unpriced = true`, a count in
    `tracepipe_llm_unpriced_spans_total{model}` and one log line per model name.

    Spans of agent/tool operations (`invoke_agent`, `create_agent`, `execute_tool`) are not
    priced: their token counts are usually sums of their child LLM calls.

Token semantics (assumed, documented)
    `gen_ai.usage.input_tokens` INCLUDES cache read and cache creation tokens (OpenAI
    reports prompt_tokens that way and the semconv describes input tokens as all input
    tokens); genai-prices' `Usage.input_tokens` has the same convention. When a span's cache
    counts exceed its input count (Anthropic's API reports input_tokens WITHOUT cache
    tokens), the input count is taken as exclusive and the cache counts are added to it.

How it is fast
    `genai_prices.calc_price` costs ~80 us a call. Here (provider, model) resolves once to a
    pricing object (bounded cache). Prices without tiers are linear in the token counts, so
    per-token coefficients are derived from genai-prices itself (by pricing unit usages)
    and each span costs a few float multiplications. Tiered prices are linear too between
    two tier starts: one set of coefficients per band of input tokens (`TieredLinearPrice`).
"""

from __future__ import annotations

import bisect
import copy
import fnmatch
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, TieredPrices, Usage
from pydantic import Field, model_validator

from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.logs import safe_value
from pipeline.spans import Attributes, SpanBatch, attr_float
from processors.normalize import (
    CACHE_CREATION_TOKENS,
    CACHE_READ_TOKENS,
    COST_USD,
    INPUT_TOKENS,
    OPERATION,
    OUTPUT_TOKENS,
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
)

COST_SOURCE = "tracepipe.cost.source"
COST_UNPRICED = "tracepipe.cost.unpriced"
SOURCE_CLIENT = "client"
SOURCE_OVERRIDE = "override"
SOURCE_SPAN_RATES = "span_rates"
SOURCE_GENAI_PRICES = "genai-prices"

SPAN_RATE_PROMPT = "cost_per_prompt_token"
SPAN_RATE_COMPLETION = "cost_per_completion_token"
SERVICE_TIER_KEYS = ("openai.response.service_tier", "gen_ai.openai.response.service_tier",
                     "openai.request.service_tier", "gen_ai.openai.request.service_tier")  # fmt: skip
NOT_PRICED_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool"})

# gen_ai.provider.name (semconv values) -> genai-prices provider id.
GENAI_PRICES_PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
}

_MTOK = 1_000_000
_CACHE_LIMIT = 20_000
# No real model id is this long; a longer one is not looked up (genai-prices matches it
# against every model, which took 3 s for a 15 MiB name), cached or logged: it stays unpriced.
MAX_MODEL_NAME_CHARS = 256


# --- configuration -------------------------------------------------------------------------


class PriceAs(ComponentConfig):
    model: str = Field(..., description="Price with genai-prices' price of this model.")
    provider: str | None = Field(
        None, description="genai-prices provider id (openai, anthropic, ...) or semconv value."
    )


class ModelOverride(ComponentConfig):
    """A price for models genai-prices does not know (or that you pay differently for)."""

    model: str = Field(..., description="Model name, case-insensitive; `*` and `?` globs allowed (`ft:gpt-4o*`).")
    provider: str | None = Field(None, description="Only when gen_ai.provider.name equals this (semconv value).")
    input_per_mtok: float | None = Field(None, ge=0, description="USD per million input (uncached) tokens.")
    output_per_mtok: float | None = Field(None, ge=0, description="USD per million output tokens.")
    cache_read_per_mtok: float | None = Field(
        None, ge=0, description="USD per million cache-read tokens (default: input)."
    )
    cache_write_per_mtok: float | None = Field(
        None, ge=0, description="USD per million cache-write tokens (default: input)."
    )
    cost_per_prompt_token: float | None = Field(
        None, ge=0, description="USD per input token (instead of input_per_mtok)."
    )
    cost_per_completion_token: float | None = Field(None, ge=0, description="USD per output token.")
    per_request: float = Field(0.0, ge=0, description="USD added per call.")
    price_as: PriceAs | None = Field(
        None, description="Use genai-prices' price of another model (fine-tunes, aliases)."
    )
    multiplier: float = Field(1.0, gt=0, description="Factor applied to the resulting cost.")

    @model_validator(mode="after")
    def _one_way(self) -> ModelOverride:
        if self.input_per_mtok is not None and self.cost_per_prompt_token is not None:
            raise ValueError("give input_per_mtok or cost_per_prompt_token, not both")
        if self.output_per_mtok is not None and self.cost_per_completion_token is not None:
            raise ValueError("give output_per_mtok or cost_per_completion_token, not both")
        has_rates = any(
            v is not None
            for v in (
                self.input_per_mtok,
                self.output_per_mtok,
                self.cost_per_prompt_token,
                self.cost_per_completion_token,
            )
        )
        if self.price_as is not None and has_rates:
            raise ValueError("give either price_as or explicit prices, not both")
        if self.price_as is None and not has_rates and self.per_request == 0:
            raise ValueError("an override needs prices (input/output per mtok or per token), per_request or price_as")
        return self

    def per_token(self) -> tuple[float, float, float, float]:
        """(input, output, cache_read, cache_write) USD per token."""
        inp = (
            self.cost_per_prompt_token
            if self.cost_per_prompt_token is not None
            else (self.input_per_mtok or 0.0) / _MTOK
        )
        out = (
            self.cost_per_completion_token
            if self.cost_per_completion_token is not None
            else (self.output_per_mtok or 0.0) / _MTOK
        )
        cr = self.cache_read_per_mtok / _MTOK if self.cache_read_per_mtok is not None else inp
        cw = self.cache_write_per_mtok / _MTOK if self.cache_write_per_mtok is not None else inp
        return inp, out, cr, cw


class Discount(ComponentConfig):
    """A negotiated discount on genai-prices' list prices, as a multiplier."""

    provider: str | None = Field(None, description="gen_ai.provider.name value (semconv) it applies to; any if unset.")
    model: str | None = Field(None, description="Model name or glob it applies to; any if unset.")
    multiplier: float = Field(..., gt=0, le=10, description="Factor on the list price (0.8 = 20% off).")

    @model_validator(mode="after")
    def _scoped(self) -> Discount:
        if self.provider is None and self.model is None:
            raise ValueError("a discount needs a provider or a model")
        return self


class CostConfig(ComponentConfig):
    trust_client_cost: bool = Field(
        True,
        description="Keep a cost the span already carries (gen_ai.usage.cost_usd) and honour per-token prices "
        "it carries (cost_per_prompt_token / cost_per_completion_token). When false, tracepipe prices the span "
        "itself and keeps the client's cost only if it cannot.",
    )
    overrides: list[ModelOverride] = Field(
        default_factory=list,
        description="Prices for custom/fine-tuned models or replacing list prices; first match wins.",
    )
    discounts: list[Discount] = Field(
        default_factory=list,
        description="Multipliers on genai-prices' prices by provider/model; first match wins.",
    )
    match_model_without_provider: bool = Field(
        True,
        description="When a span has no gen_ai.provider.name, let genai-prices find the provider from the model name. "
        "A span whose provider genai-prices does not know is never priced by model name alone.",
    )
    cache_size: int = Field(
        _CACHE_LIMIT, gt=0, description="Distinct (provider, model) pairs whose pricing is cached."
    )


# --- pricing objects -------------------------------------------------------------------------


class LinearPrice:
    """cost = const + inp*(input - cache_read - cache_write) + cr*cache_read + cw*cache_write + out*output."""

    __slots__ = ("const", "cr", "cw", "inp", "out", "source")

    def __init__(self, source: str, const: float, inp: float, out: float, cr: float, cw: float) -> None:
        self.source = source
        self.const = const
        self.inp = inp
        self.out = out
        self.cr = cr
        self.cw = cw

    def cost(self, inp: int, out: int, cr: int, cw: int) -> float:
        return self.const + self.inp * (inp - cr - cw) + self.cr * cr + self.cw * cw + self.out * out

    def scaled(self, k: float) -> LinearPrice:
        return LinearPrice(self.source, self.const * k, self.inp * k, self.out * k, self.cr * k, self.cw * k)


def linear_from_model_price(mp: ModelPrice, multiplier: float = 1.0) -> LinearPrice:
    """Per-token coefficients of a tier-free ModelPrice, derived by pricing unit usages with genai-prices."""

    def total(u: Usage) -> Decimal:
        return mp.calc_price(u)["total_price"]

    const = total(Usage())
    inp = (total(Usage(input_tokens=_MTOK)) - const) / _MTOK
    out = (total(Usage(output_tokens=_MTOK)) - const) / _MTOK
    cr = (total(Usage(input_tokens=_MTOK, cache_read_tokens=_MTOK)) - const) / _MTOK
    cw = (total(Usage(input_tokens=_MTOK, cache_write_tokens=_MTOK)) - const) / _MTOK
    return LinearPrice(SOURCE_GENAI_PRICES, float(const), float(inp), float(out), float(cr), float(cw)).scaled(
        multiplier
    )


def is_tiered(mp: ModelPrice) -> bool:
    return any(isinstance(v, TieredPrices) for v in mp.__dict__.values())


class TieredLinearPrice:
    """A tiered ModelPrice as linear prices per band of input tokens.

    genai-prices prices ALL tokens of a request at the tier its total input tokens fall in
    (a tier applies when input > its start), so between two consecutive tier starts the
    price is linear: each band gets the ModelPrice with every TieredPrices replaced by the
    rate of that band, reduced to coefficients by `linear_from_model_price` (genai-prices
    itself prices the unit usages). Costs one bisect per span instead of a calc_price call
    (~70 us) per distinct usage."""

    __slots__ = ("_bands", "model_price", "multiplier", "starts")

    def __init__(self, mp: ModelPrice, multiplier: float) -> None:
        self.model_price = mp
        self.multiplier = multiplier
        self.starts = sorted({t.start for v in mp.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers})
        self._bands: list[LinearPrice | None] = [None] * (len(self.starts) + 1)

    def _band(self, b: int) -> LinearPrice:
        flat = copy.copy(self.model_price)
        for name, v in list(flat.__dict__.items()):
            if isinstance(v, TieredPrices):
                rate = v.base
                for tier in v.tiers:  # sorted ascending; band b has input > starts[b - 1]
                    if b > 0 and tier.start <= self.starts[b - 1]:
                        rate = tier.price
                setattr(flat, name, rate)
        lp = self._bands[b] = linear_from_model_price(flat, self.multiplier)
        return lp

    def cost(self, inp: int, out: int, cr: int, cw: int) -> float:
        b = bisect.bisect_left(self.starts, inp)  # how many tier starts the input exceeds
        lp = self._bands[b] or self._band(b)
        return lp.cost(inp, out, cr, cw)


class GenaiPricesPrice:
    """A genai-prices model whose price depends on the request: dated or time-of-day prices
    (by the span's start time), service-tier variants (by the span's service tier), or tiers.
    Each variant's linear prices are still reduced to coefficients once."""

    __slots__ = ("_by_variant", "dated", "has_variants", "model", "multiplier", "source")

    def __init__(self, model: ModelInfo, provider: Provider, multiplier: float) -> None:
        self.source = SOURCE_GENAI_PRICES
        self.model = model
        self.multiplier = multiplier
        # genai-prices applies request context only to a provider's own models (not fallbacks).
        self.has_variants = bool(model.price_variants) and any(model is m for m in provider.models)
        self.dated = isinstance(model.prices, list) or any(
            v.constraint is not None for v in (model.price_variants or ())
        )
        self._by_variant: dict[tuple[Any, str | None], LinearPrice | TieredLinearPrice] = {}

    def _dated_key(self, ts: datetime) -> Any:
        prices = self.model.prices
        idx = 0
        if isinstance(prices, list):
            for i in range(len(prices) - 1, -1, -1):
                c = prices[i].constraint
                if c is None or c.active(ts):
                    idx = i
                    break
        if any(v.constraint is not None for v in (self.model.price_variants or ())):
            return (idx, tuple(v.constraint is None or v.constraint.active(ts) for v in self.model.price_variants))
        return idx

    def cost(self, start_ns: int, a: Attributes, inp: int, out: int, cr: int, cw: int) -> float:
        tier: str | None = None
        if self.has_variants:
            for k in SERVICE_TIER_KEYS:
                t = a.get(k)
                if isinstance(t, str) and t:
                    tier = t
                    break
        ts: datetime | None = None
        dkey: Any = 0
        if self.dated:
            ts = datetime.fromtimestamp(start_ns / 1e9, tz=UTC) if start_ns > 0 else datetime.now(tz=UTC)
            dkey = self._dated_key(ts)
        key = (dkey, tier)
        priced = self._by_variant.get(key)
        if priced is None:
            # get_prices selects by the same rules as _dated_key, so the cache key is exact.
            mp = self.model.get_prices(ts or datetime.now(tz=UTC), {"service_tier": tier} if tier else None)
            priced = TieredLinearPrice(mp, self.multiplier) if is_tiered(mp) else linear_from_model_price(
                mp, self.multiplier
            )
            self._by_variant[key] = priced
        return priced.cost(inp, out, cr, cw)


# --- the processor ----------------------------------------------------------------------------

_Pricing = LinearPrice | GenaiPricesPrice | None


class CostProcessor(BaseProcessor):
    """Sets gen_ai.usage.cost_usd on GenAI spans, in place."""

    def __init__(self, component_id: str, config: CostConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self._snapshot = get_snapshot()
        self._pricing: dict[tuple[str | None, str], _Pricing] = {}
        self._exact_overrides: dict[str, list[ModelOverride]] = {}
        self._glob_overrides: list[ModelOverride] = []
        for o in config.overrides:
            if any(ch in o.model for ch in "*?["):
                self._glob_overrides.append(o)
            else:
                self._exact_overrides.setdefault(o.model.lower(), []).append(o)
        self._logged_unpriced: set[str] = set()
        self._metric: Callable[[str], Any] = ctx.telemetry.llm_unpriced_spans.labels
        self._guard = ctx.telemetry.guard

    # --- hot path ------------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        trust = self.config.trust_client_cost
        pricing_cache = self._pricing
        unpriced: Counter[str] | None = None
        for span in batch.spans:
            a = span.attributes
            model = a.get(RESPONSE_MODEL) or a.get(REQUEST_MODEL)
            if model is None and INPUT_TOKENS not in a and OUTPUT_TOKENS not in a:
                continue  # not a GenAI call
            if trust and COST_USD in a:
                client_cost = attr_float(a, COST_USD)
                if client_cost is not None and client_cost >= 0:
                    a[COST_USD] = client_cost  # "0.01" -> 0.01 for the sinks
                    a[COST_SOURCE] = SOURCE_CLIENT
                    continue
            if a.get(OPERATION) in NOT_PRICED_OPERATIONS:
                continue
            counts = _token_counts(a)
            if counts is None:
                continue  # a model but no usage: nothing to price
            inp, out, cr, cw = counts
            if trust and (SPAN_RATE_PROMPT in a or SPAN_RATE_COMPLETION in a):
                cpp = attr_float(a, SPAN_RATE_PROMPT) or 0.0
                cpc = attr_float(a, SPAN_RATE_COMPLETION) or 0.0
                a[COST_USD] = inp * cpp + out * cpc
                a[COST_SOURCE] = SOURCE_SPAN_RATES
                continue
            provider = a.get(PROVIDER)
            model_s = model if isinstance(model, str) else ("" if model is None else str(model))
            if len(model_s) > MAX_MODEL_NAME_CHARS:
                model_s = ""  # unpriced as an unknown model: never looked up, cached or logged
            pkey = (provider if isinstance(provider, str) else None, model_s)
            pricing = pricing_cache.get(pkey, _MISSING)
            if pricing is _MISSING:
                pricing = self._resolve_safely(pkey[0], model_s)
                request_model = a.get(REQUEST_MODEL)
                if (
                    pricing is None
                    and model_s
                    and request_model not in (None, model_s)
                    and len(str(request_model)) <= MAX_MODEL_NAME_CHARS
                ):
                    pricing = self._resolve_safely(pkey[0], str(request_model))
                if len(pricing_cache) >= self.config.cache_size:
                    pricing_cache.clear()
                pricing_cache[pkey] = pricing
            value: float | None = None
            if pricing is not None:
                if isinstance(pricing, LinearPrice):
                    value = pricing.cost(inp, out, cr, cw)
                else:
                    try:
                        value = pricing.cost(span.start_ns, a, inp, out, cr, cw)
                    except Exception:  # genai-prices cannot price this usage: flag the span, never drop it
                        value = None
            if value is None or pricing is None:
                if COST_USD in a and attr_float(a, COST_USD) is not None:
                    a[COST_SOURCE] = SOURCE_CLIENT  # untrusted, but better than nothing
                    continue
                a.pop(COST_USD, None)
                a[COST_UNPRICED] = True
                if unpriced is None:
                    unpriced = Counter()
                unpriced[model_s or "unknown"] += 1
                continue
            a[COST_USD] = value
            a[COST_SOURCE] = pricing.source
        if unpriced:
            self._report_unpriced(unpriced)
        return batch

    # --- resolution (once per provider/model) ---------------------------------------------

    def _resolve_safely(self, provider: str | None, model: str) -> _Pricing:
        try:
            return self._resolve(provider, model)
        except Exception as exc:  # a price entry genai-prices cannot evaluate: unpriced, not a lost batch
            self.ctx.logger.warning(
                "%s: cannot evaluate the price of model %r (%s)",
                self.component_id,
                safe_value(model),
                type(exc).__name__,
            )
            return None

    def _resolve(self, provider: str | None, model: str) -> _Pricing:
        if not model:
            return None
        override = self._find_override(provider, model)
        if override is not None:
            if override.price_as is not None:
                ref = override.price_as
                target_provider = ref.provider if ref.provider is not None else provider
                return self._genai_prices(target_provider, ref.model, override.multiplier, use_discounts=False)
            inp, out, cr, cw = override.per_token()
            return LinearPrice(SOURCE_OVERRIDE, override.per_request, inp, out, cr, cw).scaled(override.multiplier)
        return self._genai_prices(provider, model, 1.0, use_discounts=True)

    def _find_override(self, provider: str | None, model: str) -> ModelOverride | None:
        low = model.lower()
        for o in self._exact_overrides.get(low, ()):
            if o.provider is None or o.provider == provider:
                return o
        for o in self._glob_overrides:
            if (o.provider is None or o.provider == provider) and fnmatch.fnmatchcase(low, o.model.lower()):
                return o
        return None

    def _discount(self, provider: str | None, model: str) -> float:
        low = model.lower()
        for d in self.config.discounts:
            if d.provider is not None and d.provider != provider:
                continue
            if d.model is not None and not fnmatch.fnmatchcase(low, d.model.lower()):
                continue
            return d.multiplier
        return 1.0

    def _genai_prices(self, provider: str | None, model: str, multiplier: float, *, use_discounts: bool) -> _Pricing:
        provider_id: str | None = None
        if provider is not None:
            provider_id = GENAI_PRICES_PROVIDERS.get(provider, provider)
        elif not self.config.match_model_without_provider:
            return None
        try:
            gp_provider, gp_model = self._snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            return None
        if use_discounts:
            multiplier *= self._discount(provider, model)
        prices = gp_model.prices
        if isinstance(prices, ModelPrice) and not gp_model.price_variants and not is_tiered(prices):
            return linear_from_model_price(prices, multiplier)
        return GenaiPricesPrice(gp_model, gp_provider, multiplier)

    def _report_unpriced(self, unpriced: Counter[str]) -> None:
        for model, n in unpriced.items():
            self._metric(self._guard("model", model)).inc(n)
            if model not in self._logged_unpriced and len(self._logged_unpriced) < self.config.cache_size:
                self._logged_unpriced.add(model)
                self.ctx.logger.warning(
                    "%s: no price for model %r; its spans are flagged %s (add an override to price it)",
                    self.component_id,
                    safe_value(model),
                    COST_UNPRICED,
                )


_MISSING: Any = object()


def _count(a: Attributes, key: str) -> int | None:
    v = a.get(key)
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if v >= 0 else None
    if isinstance(v, float | str):
        try:
            f = float(v)
        except ValueError:
            return None
        return int(f) if f >= 0 and f == f and f != float("inf") else None
    return None


def _token_counts(a: Attributes) -> tuple[int, int, int, int] | None:
    """(input incl. cache, output, cache_read, cache_write), or None when the span reports no usage."""
    inp = _count(a, INPUT_TOKENS)
    out = _count(a, OUTPUT_TOKENS)
    if inp is None and out is None:
        return None
    inp = inp or 0
    out = out or 0
    cr = (_count(a, CACHE_READ_TOKENS) or 0) if CACHE_READ_TOKENS in a else 0
    cw = (_count(a, CACHE_CREATION_TOKENS) or 0) if CACHE_CREATION_TOKENS in a else 0
    if cr + cw > inp:
        inp += cr + cw  # input reported without cache tokens (Anthropic's convention)
    return inp, out, cr, cw


factory = Factory(
    "cost",
    CostConfig,
    CostProcessor,
    "Price GenAI spans in USD with genai-prices, YAML overrides and discounts (gen_ai.usage.cost_usd).",
)
