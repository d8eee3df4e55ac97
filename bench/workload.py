"""Synthetic OTLP workloads shaped like GenAI application traffic, for benchmarks and load tests.

Each trace is a small RAG-style tree: a root request span, a retrieval span, and an LLM
call carrying gen_ai.* attributes with a prompt and completion of a few KB. Every span has
ten attributes. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku-latest"),
          ("anthropic", "claude-sonnet-4-5")]
SERVICES = ["chat-api", "rag-worker", "support-bot", "search"]
FEATURES = ["chat", "summarize", "search", "support"]
_WORDS = ("the customer asked about the refund policy for annual plans and whether the discount "
          "applies to team seats purchased during the promotion period").split(" ")


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _text(rng: random.Random, n_bytes: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_bytes:
        w = rng.choice(_WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def make_request(n_traces: int, *, seed: int = 1, prompt_bytes: int = 2000, error_rate: float = 0.02,
                 now_ns: int | None = None, service: str | None = None) -> ExportTraceServiceRequest:
    """`n_traces` traces of 3 spans each (root, retrieval, LLM call), one ResourceSpans per trace."""
    rng = random.Random(seed)
    now_ns = now_ns or time.time_ns()
    req = ExportTraceServiceRequest()
    for _ in range(n_traces):
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        ids = [rng.getrandbits(64).to_bytes(8, "big") for _ in range(3)]
        provider, model = rng.choice(MODELS)
        svc = service or rng.choice(SERVICES)
        user = f"user-{rng.randrange(5000)}"
        feature = rng.choice(FEATURES)
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([_kv("service.name", svc), _kv("deployment.environment", "prod")])
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        start = now_ns - rng.randrange(1_000_000_000, 5_000_000_000)
        llm_ms = rng.randrange(200, 3000)
        end = start + (50 + llm_ms + 20) * 1_000_000
        error = rng.random() < error_rate
        root = Span(trace_id=trace_id, span_id=ids[0], name="rag-pipeline", kind=Span.SPAN_KIND_SERVER,
                    start_time_unix_nano=start, end_time_unix_nano=end)
        root.attributes.extend([_kv(k, v) for k, v in (
            ("user.id", user), ("session.id", f"s-{rng.randrange(10**6)}"), ("app.feature", feature),
            ("http.request.method", "POST"), ("http.route", "/v1/chat"), ("http.response.status_code", 200),
            ("url.scheme", "https"), ("server.address", "api.example.com"), ("user.tier", "pro"),
            ("request.size", rng.randrange(100, 5000)))])
        if error:
            root.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="upstream timeout"))
        retrieval = Span(trace_id=trace_id, span_id=ids[1], parent_span_id=ids[0], name="retrieval",
                         kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start + 1_000_000,
                         end_time_unix_nano=start + 50_000_000)
        retrieval.attributes.extend([_kv(k, v) for k, v in (
            ("db.system", "qdrant"), ("db.operation", "search"), ("db.collection.name", "docs"),
            ("retrieval.top_k", 8), ("retrieval.documents", 8), ("embedding.model", "text-embedding-3-small"),
            ("embedding.dimensions", 1536), ("cache.hit", False), ("vector.distance", "cosine"),
            ("query.length", rng.randrange(10, 400)))])
        llm = Span(trace_id=trace_id, span_id=ids[2], parent_span_id=ids[0], name=f"chat {model}",
                   kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start + 50_000_000,
                   end_time_unix_nano=start + (50 + llm_ms) * 1_000_000)
        inp = rng.randrange(200, 4000)
        llm.attributes.extend([_kv(k, v) for k, v in (
            ("gen_ai.system", provider), ("gen_ai.operation.name", "chat"), ("gen_ai.request.model", model),
            ("gen_ai.response.model", model), ("gen_ai.usage.input_tokens", inp),
            ("gen_ai.usage.output_tokens", rng.randrange(20, 800)), ("gen_ai.request.temperature", 0.2),
            ("gen_ai.response.finish_reasons", "stop"), ("gen_ai.prompt", _text(rng, prompt_bytes)),
            ("gen_ai.completion", _text(rng, prompt_bytes // 2)))])
        ss.spans.extend([root, retrieval, llm])
    return req


def spans_in(req: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
