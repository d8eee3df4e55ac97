"""Throughput of the normalize and cost processors, each alone, on one core.

Spans are bench/workload.py's RAG traces (root + retrieval + LLM call, ten attributes each, a
few KB of prompt/completion on the LLM span), decoded by tracepipe's OTLP decoder. Workloads:

- otel:      the LLM spans use current/older OTel gen_ai names (1 span in 3 is GenAI);
- dialects:  the LLM spans are rewritten into a mix of OpenLLMetry, OpenInference, Lumina-style
             plain attributes and OTel names (what normalize does real work on);
- no-genai:  only the root and retrieval spans (what most traffic costs);
- tiered:    every LLM span is a tiered-price model (gemini-2.5-pro), cost only;
- dated:     every LLM span is a model whose price changed on a date (claude-sonnet-4-6), cost only.

Each timed run gets fresh copies of the spans (copying is not timed), in batches of
--batch spans. Prints spans/s per processor and workload, and genai_prices.calc_price's own
cost per call for comparison.

    python -m bench.processors_normalize_cost [--traces 10000] [--batch 3000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from genai_prices import Usage, calc_price

from bench.workload import make_request
from pipeline.component import ComponentContext
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span, SpanBatch, copy_span
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.cost import CostConfig, CostProcessor
from processors.normalize import NormalizeConfig, NormalizeProcessor


def _to_dialect(span: Span, rng: random.Random) -> None:
    a = span.attributes
    model = a.get("gen_ai.request.model", "gpt-4o-mini")
    provider = a.get("gen_ai.system", "openai")
    inp = a.get("gen_ai.usage.input_tokens", 100)
    out = a.get("gen_ai.usage.output_tokens", 10)
    prompt = a.get("gen_ai.prompt", "")
    completion = a.get("gen_ai.completion", "")
    style = rng.randrange(4)
    if style == 0:  # OpenLLMetry (older)
        new = {
            "llm.request.type": "chat", "gen_ai.system": provider, "llm.request.model": model,
            "llm.response.model": model, "llm.usage.prompt_tokens": inp, "llm.usage.completion_tokens": out,
            "llm.usage.total_tokens": inp + out, "traceloop.association.properties.user_id": "u-1",
            "gen_ai.prompt.0.content": prompt, "gen_ai.completion.0.content": completion,
        }  # fmt: skip
    elif style == 1:  # OpenInference
        new = {
            "openinference.span.kind": "LLM", "llm.system": provider, "llm.model_name": model,
            "llm.token_count.prompt": inp, "llm.token_count.completion": out, "llm.token_count.total": inp + out,
            "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": prompt,
            "llm.output_messages.0.message.content": completion, "session.id": "s-1",
        }  # fmt: skip
    elif style == 2:  # Lumina-style plain
        new = {
            "model": model, "prompt_tokens": inp, "completion_tokens": out, "user_id": "u-2", "session_id": "s-2",
            "feature": "chat", "customer_id": "acme", "prompt": prompt, "completion": completion, "latency_ms": 120,
        }  # fmt: skip
    else:  # older OTel gen_ai
        new = {
            "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.prompt_tokens": inp, "gen_ai.usage.completion_tokens": out,
            "gen_ai.usage.cache_read_input_tokens": inp // 2, "gen_ai.operation.name": "chat",
            "gen_ai.prompt": prompt, "gen_ai.completion": completion, "langfuse.user.id": "u-3",
            "langfuse.session.id": "s-3",
        }  # fmt: skip
    span.attributes = new


def build(traces: int) -> dict[str, list[Span]]:
    spans = decode_request(make_request(traces, seed=7, prompt_bytes=2000))
    rng = random.Random(3)
    dialects = [copy_span(s) for s in spans]
    for s in dialects:
        if "gen_ai.request.model" in s.attributes:
            _to_dialect(s, rng)
    no_genai = [s for s in spans if "gen_ai.request.model" not in s.attributes]
    tiered = [copy_span(s) for s in spans]
    for s in tiered:
        if "gen_ai.request.model" in s.attributes:
            s.attributes["gen_ai.request.model"] = s.attributes["gen_ai.response.model"] = "gemini-2.5-pro"
            s.attributes["gen_ai.system"] = "gcp.gemini"
    dated = [copy_span(s) for s in spans]
    for s in dated:
        if "gen_ai.request.model" in s.attributes:
            s.attributes["gen_ai.request.model"] = s.attributes["gen_ai.response.model"] = "claude-sonnet-4-6"
            s.attributes["gen_ai.system"] = "anthropic"
    return {"otel": spans, "dialects": dialects, "no-genai": no_genai, "tiered": tiered, "dated": dated}


def timed(process: Callable[[SpanBatch], SpanBatch], spans: list[Span], batch: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        fresh = [copy_span(s) for s in spans]
        batches = [SpanBatch(fresh[i : i + batch], str(i)) for i in range(0, len(fresh), batch)]
        t0 = time.perf_counter()
        for b in batches:
            process(b)
        best = min(best, time.perf_counter() - t0)
    return len(spans) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    ctx = ComponentContext("bench", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("bench"))
    normalize = NormalizeProcessor("normalize", NormalizeConfig(), ctx)
    cost = CostProcessor("cost", CostConfig(), ctx)
    workloads = build(args.traces)

    print(f"normalize / cost, one core, batches of {args.batch} spans, best of {args.repeat}")
    print(f"{'workload':<10} {'spans':>7} {'genai':>6} {'normalize spans/s':>18} {'cost spans/s':>13}")
    for name, spans in workloads.items():
        cost_only = name in ("tiered", "dated")
        n_rate = float("nan") if cost_only else timed(normalize.process, spans, args.batch, args.repeat)
        # cost runs after normalize in a chain: give it normalized spans (normalizing is not timed)
        normalized = [copy_span(s) for s in spans]
        normalize.process(SpanBatch(normalized, "pre"))
        genai = sum(1 for s in normalized if "gen_ai.request.model" in s.attributes)
        c_rate = timed(cost.process, normalized, args.batch, args.repeat)
        print(f"{name:<10} {len(spans):>7} {genai:>6} {n_rate:>18,.0f} {c_rate:>13,.0f}")

    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        calc_price(Usage(input_tokens=1000 + i, output_tokens=100), "gpt-4o-mini", provider_id="openai")
    per_call = (time.perf_counter() - t0) / n
    print(f"genai_prices.calc_price alone: {per_call * 1e6:.0f} us/call ({1 / per_call:,.0f} calls/s)")


if __name__ == "__main__":
    main()
