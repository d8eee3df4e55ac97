"""Sample traces and a started clickhouse sink over the session's chDB directory (tests only)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.component import ComponentContext
from pipeline.spans import STATUS_ERROR, STATUS_OK, Event, Link, Resource, Span
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from sinks.clickhouse import ClickHouseSink, factory

MS = 1_000_000
S = 1_000_000_000
HOUR = 3600 * S


def context(data_dir: Path | str = "/nonexistent", telemetry: Telemetry | None = None) -> ComponentContext:
    from prometheus_client import CollectorRegistry

    return ComponentContext(
        component_id="clickhouse",
        telemetry=telemetry or Telemetry(CollectorRegistry()),
        state=MemoryStateStore(),
        data_dir=Path(data_dir),
        logger=logging.getLogger("tests.clickhouse"),
    )


async def started_sink(dsn: str, database: str, **config: Any) -> ClickHouseSink:
    cfg = factory.config_model(dsn=dsn, database=database, **config)
    sink = factory.create("clickhouse", cfg, context())
    await sink.start()
    return sink


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def rag_trace(
    t0: int,
    n: int = 1,
    *,
    user: str = "u1",
    feature: str = "support",
    service: str = "rag-app",
    synth_model: str = "gpt-4o",
) -> list[Span]:
    """rag-pipeline -> (retrieval -> (embedding, vector_search)), synthesis (LLM, error).

    Costs: embedding 0.00002, synthesis 0.0125; vector_search and the others unpriced."""
    res = Resource({"service.name": service, "deployment.environment": "test"})
    trace = tid(n)
    root, retrieval, emb, vs, synth = (sid(n * 10 + i) for i in range(1, 6))
    return [
        Span(
            trace,
            root,
            "rag-pipeline",
            t0,
            t0 + 2500 * MS,
            kind=2,
            resource=res,
            attributes={"user.id": user, "app.feature": feature, "tenant.id": "acme", "session.id": "s-1"},
            scope_name="app",
            scope_version="1.0",
        ),
        Span(trace, retrieval, "retrieval", t0 + 10 * MS, t0 + 1810 * MS, parent_span_id=root, resource=res),
        Span(
            trace,
            emb,
            "embedding",
            t0 + 20 * MS,
            t0 + 220 * MS,
            parent_span_id=retrieval,
            kind=3,
            resource=res,
            attributes={
                "gen_ai.provider.name": "openai",
                "gen_ai.operation.name": "embeddings",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.cost_usd": 0.00002,
            },
        ),
        Span(
            trace,
            vs,
            "vector_search",
            t0 + 220 * MS,
            t0 + 1800 * MS,
            parent_span_id=retrieval,
            resource=res,
            attributes={"db.system": "qdrant"},
        ),
        Span(
            trace,
            synth,
            "synthesis",
            t0 + 1810 * MS,
            t0 + 2500 * MS,
            parent_span_id=root,
            kind=3,
            resource=res,
            status_code=STATUS_ERROR,
            status_message="rate limited once",
            attributes={
                "gen_ai.provider.name": "openai",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": synth_model,
                "gen_ai.response.model": synth_model + "-2024-08-06",
                "gen_ai.usage.input_tokens": 2000,
                "gen_ai.usage.output_tokens": 500,
                "gen_ai.usage.cache_read.input_tokens": 300,
                "gen_ai.usage.cost_usd": 0.0125,
                "gen_ai.conversation.id": "conv-9",
            },
            events=[Event(t0 + 2400 * MS, "gen_ai.choice", {"index": 0, "finish_reason": "stop"})],
        ),
    ]


def llm_trace(
    t0: int,
    n: int,
    *,
    service: str,
    model: str,
    duration_ms: int,
    cost: float | None,
    user: str = "",
    feature: str = "",
    provider: str = "openai",
    operation: str = "chat",
    ok: bool = True,
    inp: int = 100,
    out: int = 10,
) -> list[Span]:
    """A root span (carrying user/feature) with one LLM child span."""
    res = Resource({"service.name": service})
    root_attrs: dict[str, Any] = {}
    if user:
        root_attrs["user.id"] = user
    if feature:
        root_attrs["app.feature"] = feature
    llm_attrs: dict[str, Any] = {
        "gen_ai.provider.name": provider,
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": inp,
        "gen_ai.usage.output_tokens": out,
    }
    if cost is not None:
        llm_attrs["gen_ai.usage.cost_usd"] = cost
    return [
        Span(
            tid(n),
            sid(n * 10 + 1),
            "handle",
            t0,
            t0 + (duration_ms + 5) * MS,
            resource=res,
            attributes=root_attrs,
            status_code=STATUS_OK if ok else STATUS_ERROR,
        ),
        Span(
            tid(n),
            sid(n * 10 + 2),
            f"{operation} {model}",
            t0 + 1 * MS,
            t0 + (1 + duration_ms) * MS,
            parent_span_id=sid(n * 10 + 1),
            resource=res,
            attributes=llm_attrs,
            kind=3,
            links=[Link(tid(n + 1000), sid(7), "k=v", {"reason": "retry"})],
        ),
    ]
