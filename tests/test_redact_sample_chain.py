"""redact and sample under the real chain runner: accounting before sampling sees every span,
tail-held spans leave on the runner's empty-batch ticks and at flush, secrets never reach a sink."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from pipeline.chain import Chain, PipelineRun
from pipeline.component import BaseSink, ComponentContext
from pipeline.spans import STATUS_ERROR, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.redact import RedactConfig, RedactProcessor
from processors.sample import SampleConfig, SampleProcessor


class Collect(BaseSink):
    def __init__(self, cid: str, ctx: ComponentContext) -> None:
        super().__init__(cid, ctx)
        self.spans: list[Span] = []

    async def write(self, batch: SpanBatch) -> None:
        self.spans.extend(batch.spans)


def ctx(cid: str, t: Telemetry) -> ComponentContext:
    return ComponentContext(cid, t, MemoryStateStore(), Path("."), logging.getLogger(cid))


async def test_tail_sampling_behind_accounting_releases_on_ticks_and_flush() -> None:
    t = Telemetry()
    now = [0.0]
    redact = RedactProcessor("redact", RedactConfig(), ctx("redact", t))
    sample = SampleProcessor(
        "sample", SampleConfig(mode="tail", decision_wait=5, probability=0.5), ctx("sample", t), clock=lambda: now[0]
    )
    accounting, stored = Collect("accounting", ctx("accounting", t)), Collect("store", ctx("store", t))
    chain = Chain(
        [
            PipelineRun("accounting", [], ["accounting"]),
            PipelineRun("traces", [redact, sample], ["store"], source="accounting"),
        ],
        {"accounting": accounting, "store": stored},
        t,
    )
    await chain.start()
    secret = "ghp_" + "Zx9" * 12
    rng = random.Random(3)
    trace_ids = [f"{rng.getrandbits(128):032x}" for _ in range(200)]
    spans = [
        Span(tid, f"{i + 1:016x}", "chat", 0, 1, attributes={"gen_ai.prompt": f"token {secret} please"})
        for i, tid in enumerate(trace_ids)
    ]
    spans[7].status_code = STATUS_ERROR
    await chain.run(SpanBatch(spans, "b1"))
    assert len(accounting.spans) == 200 and stored.spans == []  # accounting saw all; sampling holds
    assert secret in accounting.spans[0].attributes["gen_ai.prompt"]  # the accounting copy is untouched
    now[0] = 4.0
    await chain.tick()
    assert stored.spans == []
    now[0] = 5.5
    await chain.tick()  # the runner's empty batch after the decision wait releases the traces
    kept = len(stored.spans)
    assert 50 < kept < 150 and any(s.trace_id == trace_ids[7] for s in stored.spans)
    assert all(secret not in s.attributes["gen_ai.prompt"] for s in stored.spans)
    late = [Span(f"{rng.getrandbits(128):032x}", f"{i + 1:016x}", "chat", 0, 1) for i in range(10)]
    await chain.run(SpanBatch(late, "b2"))
    await chain.flush()  # shutdown: everything held is decided and written
    assert sample.held_traces == 0
    assert kept < len(stored.spans) <= kept + 10
    await chain.close()
