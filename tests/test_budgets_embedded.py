"""End to end: OTLP spans through the embedded runtime's normalize and cost processors into the budgets sink."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from pipeline.budgets.registry import build_budget_store
from pipeline.config import build_config
from pipeline.embedded import EmbeddedRuntime


def _otlp_json(n: int, now_ns: int) -> dict:
    spans = []
    for i in range(n):
        spans.append(
            {
                "traceId": uuid.uuid4().hex,
                "spanId": uuid.uuid4().hex[:16],
                "name": "chat gpt-4o-mini",
                "kind": 3,
                "startTimeUnixNano": str(now_ns - 2_000_000_000),
                "endTimeUnixNano": str(now_ns - 1_000_000_000 + i),
                "attributes": [
                    {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                    {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "1000"}},
                    {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "500"}},
                    {"key": "user_id", "value": {"stringValue": "e2e-user"}},
                    {"key": "customer_id", "value": {"stringValue": "acme"}},
                    {"key": "feature", "value": {"stringValue": "summarize"}},
                    {"key": "user_tier", "value": {"stringValue": "free"}},
                ],
            }
        )
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "support-bot"}}]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
        ]
    }


async def test_spans_sent_over_otlp_are_counted_in_redis_budgets(tmp_path: Path, redis_service) -> None:
    prefix = f"e{uuid.uuid4().hex[:8]}"
    raw = {
        "receivers": {"otlp": {"grpc": None, "http": {"endpoint": "127.0.0.1:0"}}},
        "processors": {"normalize": {}, "cost": {}},
        "sinks": {
            "budgets": {
                "redis": {"url": redis_service.url},
                "key_prefix": prefix,
                "budgets": {
                    "user_daily": {"scope": "user", "period": "day", "tiers": {"free": {"usd": 1.0}}},
                    "customer_feature": {"scope": "customer+feature", "period": "month", "limit": {"tokens": 10_000}},
                },
            }
        },
        "service": {
            "data_dir": str(tmp_path / "data"),
            "api": {"endpoint": None},
            "metrics": {"endpoint": None},
            "batch": {"timeout": 0.05},
            "pipelines": {"accounting": {"processors": ["normalize", "cost"], "sinks": ["budgets"]}},
        },
    }
    cfg = build_config(raw)
    runtime = EmbeddedRuntime(cfg)
    endpoints = await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(f"http://{endpoints.otlp_http}/v1/traces", json=_otlp_json(4, time.time_ns()))
            assert resp.status == 200
        registry = build_budget_store(cfg)
        assert registry is not None
        deadline = time.monotonic() + 20
        while True:
            statuses = {s.budget: s for s in await registry.status("user", "e2e-user")}
            if statuses["user_daily"].spans == 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        day = statuses["user_daily"]
        assert day.spans == 4 and day.spent_tokens == 4 * 1500
        assert day.spent_usd > 0  # priced by the cost processor
        assert day.limit_usd == 1.0 and day.tier == "free"
        [cf] = await registry.status("customer+feature", "acme/summarize")
        assert (cf.spent_tokens, cf.exceeded) == (6000, False)
        await registry.close()
    finally:
        await runtime.stop()


async def test_budgets_in_a_from_pipeline_count_spans_that_sampling_drops(tmp_path: Path, redis_service) -> None:
    import logging

    from pipeline.budgets.status import read_status
    from pipeline.chain import Chain, PipelineRun
    from pipeline.component import BaseProcessor, BaseSink
    from pipeline.spans import SpanBatch
    from sinks.budgets import BudgetsSink
    from tests.budget_helpers import Clock, batch, context, llm_span, sink_config

    class DropAll(BaseProcessor):  # stands in for a sampler that keeps nothing
        def process(self, b: SpanBatch) -> SpanBatch:
            return b.with_spans([])

    class Stored(BaseSink):
        def __init__(self) -> None:
            self.spans = 0

        async def write(self, b: SpanBatch) -> None:
            self.spans += len(b.spans)

    clock = Clock()
    ctx = context(tmp_path)
    budgets = BudgetsSink(
        "budgets", sink_config(redis_service.url, key_prefix=f"f{uuid.uuid4().hex[:6]}"), ctx, clock=clock
    )
    stored = Stored()
    chain = Chain(
        [
            PipelineRun("accounting", [], ["budgets"]),
            PipelineRun("traces", [DropAll("sample", ctx)], ["clickhouse"], source="accounting"),
        ],
        {"budgets": budgets, "clickhouse": stored},
        ctx.telemetry,
        logger=logging.getLogger("test.chain"),
    )
    await chain.start()
    await chain.run(batch([llm_span(cost=0.01, user="uma") for _ in range(5)]))
    [day] = [s for s in await read_status(budgets.store, budgets.budgets, "user", "uma", clock()) if s.period == "day"]
    assert day.spans == 5 and stored.spans == 0
    await chain.close()
