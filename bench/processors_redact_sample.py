"""Throughput of the redact and sample processors alone, single core.

Spans look like GenAI LLM calls: 10 attributes including a prompt and a completion of a
few KB (prose + code), a shared resource. Redact runs on clean spans and on spans with
planted secrets (every span, and 1 in 20), with the hyperscan engine and the pure-Python
fallback. Sample runs head (p=0.1) and tail (decision wait by a fake clock).
Rates are spans per CPU-second of this process (time.process_time), so other load on the
machine does not distort them.

    python -m bench.processors_redact_sample [--spans 20000] [--prompt-bytes 3000]
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

from pipeline.component import ComponentContext
from pipeline.spans import Resource, Span, SpanBatch, copy_span
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.redact import RedactConfig, RedactProcessor
from processors.sample import SampleConfig, SampleProcessor
from tests.redact_corpus import FILLER, canaries, clean_values

BATCH = 1000


def ctx() -> ComponentContext:
    return ComponentContext("bench", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("bench"))


def make_spans(n: int, prompt_bytes: int, dirty_every: int, seed: int = 1) -> list[Span]:
    rng = random.Random(seed)
    code = [v for v in clean_values(seed, 400) if "\n" in v or "(" in v] or ["def f(x):\n    return x"]
    secrets = []
    for c in canaries(seed, 2):  # the secret in its phrase, ~100 characters of context each side
        at = c.text.find(c.secret)
        secrets.append(c.text[max(0, at - 100) : at + len(c.secret) + 100])
    resource = Resource({"service.name": "chat-api", "deployment.environment": "prod", "host.name": "ip-10-0-3-7"})
    out = []
    for i in range(n):
        prompt_parts: list[str] = []
        while sum(map(len, prompt_parts)) < prompt_bytes:
            prompt_parts.append(FILLER if rng.random() < 0.6 else rng.choice(code))
        prompt = "".join(prompt_parts)[:prompt_bytes]
        completion = (FILLER * (prompt_bytes // len(FILLER) + 1))[: prompt_bytes // 2]
        if dirty_every and i % dirty_every == 0:
            prompt += "\n" + rng.choice(secrets)
        attrs = {
            "gen_ai.provider.name": "openai",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": rng.randrange(100, 4000),
            "gen_ai.usage.output_tokens": rng.randrange(10, 800),
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(96):024x}",
            "user.id": f"user-{rng.randrange(5000)}",
            "gen_ai.prompt": prompt,
            "gen_ai.completion": completion,
        }
        out.append(Span(f"{rng.getrandbits(128):032x}", f"{i + 1:016x}", "chat gpt-4o-mini", 0, 10**9,
                        attributes=attrs, resource=resource))  # fmt: skip
    return out


def run(proc, spans: list[Span]) -> float:
    batches = [[copy_span(s) for s in spans[i : i + BATCH]] for i in range(0, len(spans), BATCH)]
    t0 = time.process_time()
    for i, b in enumerate(batches):
        proc.process(SpanBatch(b, f"b{i}"))
    return len(spans) / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--prompt-bytes", type=int, default=3000)
    ap.add_argument("--python-spans", type=int, default=2000, help="spans for the (slow) python engine")
    args = ap.parse_args()
    n = args.spans
    print(f"{n} spans, 10 attributes, prompt {args.prompt_bytes} B + completion {args.prompt_bytes // 2} B, "
          f"batches of {BATCH}, one core")  # fmt: skip
    for label, every in (("clean", 0), ("1 in 20 with a secret", 20), ("every span with a secret", 1)):
        spans = make_spans(n, args.prompt_bytes, every)
        for engine in ("hyperscan", "python"):
            proc = RedactProcessor("redact", RedactConfig(engine=engine), ctx())
            run(proc, spans[:BATCH])  # warm up (database compile, caches)
            rate = run(proc, spans if engine == "hyperscan" else spans[: args.python_spans])
            print(f"redact  engine={engine:9s} {label:26s} {rate:10,.0f} spans/s")
    spans = make_spans(n, 200, 0)
    head = SampleProcessor("sample", SampleConfig(probability=0.1), ctx())
    print(f"sample  head p=0.1                                  {run(head, spans):10,.0f} spans/s")
    clock = [0.0]
    tail = SampleProcessor(
        "sample", SampleConfig(mode="tail", decision_wait=0.5, probability=0.1), ctx(), clock=lambda: clock[0]
    )
    batches = [spans[i : i + BATCH] for i in range(0, len(spans), BATCH)]
    t0 = time.process_time()
    for i, b in enumerate(batches):
        clock[0] += 0.1  # traces wait 5 batches, then are decided
        tail.process(SpanBatch(b, f"b{i}"))
    tail.flush()
    print(f"sample  tail (errors + p=0.1, 0.5 s wait)            {n / (time.process_time() - t0):10,.0f} spans/s")


if __name__ == "__main__":
    main()
