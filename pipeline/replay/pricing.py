"""The cost of a replayed call, priced exactly as the pipeline prices spans: the config's `cost`
processor (genai-prices, its overrides and discounts; the processor's default settings when the
config has none) run on a span carrying the call's model and token counts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.component import ComponentContext
from pipeline.config import Config
from pipeline.semconv import (
    GEN_AI_CACHE_READ_TOKENS,
    GEN_AI_COST_USD,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
)
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.cost import CostConfig, CostProcessor


class Pricer:
    """`cost(model, input_tokens, output_tokens, ...)` in USD, or None when nobody can price the model."""

    def __init__(self, config: CostConfig | None = None) -> None:
        ctx = ComponentContext("replay-cost", Telemetry(), MemoryStateStore(), Path("."),
                               logging.getLogger("tracepipe.replay"))
        self._processor = CostProcessor("replay-cost", config or CostConfig(), ctx)

    @classmethod
    def from_config(cls, cfg: Config) -> Pricer:
        """Priced like the config's first `cost` processor (or its defaults)."""
        for spec in cfg.processors.values():
            if spec.type == "cost" and isinstance(spec.config, CostConfig):
                return cls(spec.config.model_copy(update={"trust_client_cost": False}))
        return cls(CostConfig(trust_client_cost=False))

    def costs(self, calls: list[dict[str, Any]], start_ns: int) -> list[float | None]:
        """Each call (`model`, optional `response_model`, `provider`, `input_tokens`, `output_tokens`,
        `cache_read_tokens`) priced at `start_ns`."""
        spans = []
        for i, c in enumerate(calls):
            attrs: dict[str, Any] = {GEN_AI_OPERATION: "chat", GEN_AI_REQUEST_MODEL: c["model"],
                                     GEN_AI_INPUT_TOKENS: int(c.get("input_tokens") or 0),
                                     GEN_AI_OUTPUT_TOKENS: int(c.get("output_tokens") or 0)}
            if c.get("response_model"):
                attrs[GEN_AI_RESPONSE_MODEL] = c["response_model"]
            if c.get("provider"):
                attrs[GEN_AI_PROVIDER] = c["provider"]
            if c.get("cache_read_tokens"):
                attrs[GEN_AI_CACHE_READ_TOKENS] = int(c["cache_read_tokens"])
            spans.append(Span(f"{i + 1:032x}", f"{i + 1:016x}", "chat", start_ns, start_ns, attributes=attrs))
        self._processor.process(SpanBatch(spans, "replay-pricing"))
        out: list[float | None] = []
        for s in spans:
            v = s.attributes.get(GEN_AI_COST_USD)
            out.append(float(v) if isinstance(v, int | float) else None)
        return out
