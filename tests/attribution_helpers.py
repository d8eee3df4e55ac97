"""Attribution tests' traffic: 3-level GenAI traces made by the real OTel SDK, exported over
OTLP/HTTP span by span (SimpleSpanProcessor), the accounting ids only on the root span, which
ends (and so is exported) last."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


@dataclass
class Turn:
    user: str
    customer: str
    feature: str
    session: str
    request_model: str
    response_model: str
    input_tokens: int
    output_tokens: int

    @property
    def cost(self) -> float:
        """The priced cost (genai-prices, the billed response model), rounded as budgets count (nano-USD)."""
        usage = Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        usd = float(calc_price(usage, self.response_model, provider_id="openai").total_price)
        return round(usd * 1e9) / 1e9


def send_trace(otlp_http: str, turn: Turn, *, before_root: Callable[[], None] | None = None,
               service: str = "ask-app") -> str:
    """Export one trace root -> agent step -> LLM call; ids only on the root, which ends last.

    `before_root` runs after the two children were exported and before the root ends (tests wait
    there until the pipeline holds the children). Returns the trace id (hex)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_http}/v1/traces",
                                                                     timeout=30)))
    tracer = provider.get_tracer("tests.attribution")
    try:
        root = tracer.start_span("POST /ask", kind=SpanKind.SERVER, attributes={
            "user.id": turn.user, "customer.id": turn.customer, "app.feature": turn.feature,
            "session.id": turn.session, "user.tier": "pro",
        })
        from opentelemetry import trace as trace_api

        ctx = trace_api.set_span_in_context(root)
        step = tracer.start_span("agent.step", context=ctx)
        llm = tracer.start_span(f"chat {turn.request_model}", kind=SpanKind.CLIENT,
                                context=trace_api.set_span_in_context(step), attributes={
            "gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
            "gen_ai.request.model": turn.request_model, "gen_ai.response.model": turn.response_model,
            "gen_ai.usage.input_tokens": turn.input_tokens, "gen_ai.usage.output_tokens": turn.output_tokens,
        })  # fmt: skip
        time.sleep(0.001)
        llm.end()
        step.end()
        if before_root is not None:
            before_root()
        root.end()
        return f"{root.get_span_context().trace_id:032x}"
    finally:
        provider.shutdown()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def scrape(metrics_text: str, name: str, **labels: str) -> dict[str, float]:
    """Samples of `name` keyed by their label string, filtered by `labels`."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lbl = head.partition("{")
        if metric != name or not all(f'{k}="{v}"' in lbl for k, v in labels.items()):
            continue
        out[lbl.rstrip("}")] = float(value)
    return out


def per_model_cost(metrics_text: str) -> dict[str, float]:
    """tracepipe_llm_cost_usd_total summed per `model` label."""
    totals: dict[str, float] = {}
    for lbl, value in scrape(metrics_text, "tracepipe_llm_cost_usd_total").items():
        model = lbl.split('model="', 1)[1].split('"', 1)[0]
        totals[model] = totals.get(model, 0.0) + value
    return totals
