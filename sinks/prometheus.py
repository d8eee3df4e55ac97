"""prometheus sink: turns spans into low-cardinality metrics on tracepipe's /metrics.

Per batch it aggregates spans by (service, model, operation, status) and updates:
- tracepipe_spans_total, tracepipe_span_duration_seconds (histogram), for every span;
- tracepipe_llm_calls_total, tracepipe_llm_cost_usd_total, tracepipe_llm_tokens_total{type},
  for GenAI spans (those carrying a model).
`model` is the model identity (pipeline/semconv.py `model_of`: the request model, else the
response model), the same name budgets, the API, the CLI and anomaly keys group by.
Labels never include user, session or trace ids, nor span names. `operation` is the span's
gen_ai.operation.name when it is one of the semantic conventions' values (`GENAI_OPERATIONS`),
else "other". Model, provider and service values pass the label guard: redacted (the redact
rules, whatever the chain did), cut to 64 characters, capped in number (`service.metrics`
label limit), the excess folding into "other".

The exposition itself is served by the runtime on `service.metrics.endpoint`. Metrics
are process-local counters, so a redelivered batch in the distributed runtime counts
again: Prometheus counters are approximate under redelivery by nature.
"""

from __future__ import annotations

from collections import defaultdict

from pydantic import Field

from pipeline import semconv
from pipeline.component import BaseSink, ComponentConfig, ComponentContext, Factory
from pipeline.logs import safe_value
from pipeline.spans import STATUS_ERROR, STATUS_OK, SpanBatch

_TOKEN_KEYS = (
    ("input", semconv.GEN_AI_INPUT_TOKENS),
    ("output", semconv.GEN_AI_OUTPUT_TOKENS),
    ("cache_read", semconv.GEN_AI_CACHE_READ_TOKENS),
    ("cache_creation", semconv.GEN_AI_CACHE_CREATION_TOKENS),
)
_STATUS = {STATUS_ERROR: "error", STATUS_OK: "ok"}


# The well-known values of gen_ai.operation.name (OTel GenAI semantic conventions): the only
# `operation` label values besides "other".
GENAI_OPERATIONS = frozenset(
    {"chat", "text_completion", "embeddings", "generate_content", "execute_tool", "create_agent", "invoke_agent"}
)


def operation_label(value: object) -> str:
    """The `operation` label of a span: its GenAI operation name, or "other"."""
    return value if isinstance(value, str) and value in GENAI_OPERATIONS else "other"


class PrometheusSinkConfig(ComponentConfig):
    all_spans: bool = Field(
        True, description="Count and time every span; false limits the metrics to GenAI spans (with a model)."
    )


def _num(value: object) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


class PrometheusSink(BaseSink):
    def __init__(self, component_id: str, cfg: PrometheusSinkConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.cfg = cfg

    async def start(self) -> None:
        # The label guard redacts each new label value with the built-in rules; their engine is
        # compiled on first use (about half a second): compile it here, not on the first batch.
        safe_value("")

    async def write(self, batch: SpanBatch) -> None:
        t = self.ctx.telemetry
        guard = t.guard
        counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
        durations: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        llm_calls: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        llm_cost: dict[tuple[str, str, str, str], float] = defaultdict(float)
        llm_tokens: dict[tuple[str, str, str, str, str], float] = defaultdict(float)
        all_spans = self.cfg.all_spans
        for span in batch.spans:
            a = span.attributes
            model = semconv.model_of(a)
            if not model and not all_spans:
                continue
            service = guard("service", span.resource.service_name)
            operation = operation_label(a.get(semconv.GEN_AI_OPERATION))
            model_l = guard("model", str(model)) if model else "none"
            status = _STATUS.get(span.status_code, "unset")
            counts[(service, model_l, operation, status)] += 1
            durations[(service, model_l, operation)].append(span.duration_ns / 1e9)
            if model:
                provider = guard("provider", str(a.get(semconv.GEN_AI_PROVIDER) or "unknown"))
                llm_calls[(service, provider, model_l, operation, status)] += 1
                cost = a.get(semconv.GEN_AI_COST_USD)
                if cost is not None:
                    llm_cost[(service, provider, model_l, operation)] += _num(cost)
                for type_name, key in _TOKEN_KEYS:
                    v = a.get(key)
                    if v:
                        llm_tokens[(service, provider, model_l, operation, type_name)] += _num(v)
        for labels, n in counts.items():
            t.spans.labels(*labels).inc(n)
        for labels, values in durations.items():
            hist = t.span_duration.labels(*labels)
            for v in values:
                hist.observe(v)
        for labels, n in llm_calls.items():
            t.llm_calls.labels(*labels).inc(n)
        for labels, usd in llm_cost.items():
            if usd > 0:
                t.llm_cost.labels(*labels).inc(usd)
        for labels, n in llm_tokens.items():
            if n > 0:
                t.llm_tokens.labels(*labels).inc(n)


factory = Factory(
    type="prometheus",
    config_model=PrometheusSinkConfig,
    create=lambda cid, cfg, ctx: PrometheusSink(cid, cfg, ctx),
    description="LLM and span metrics (cost, tokens, calls, durations) on the /metrics endpoint.",
)
