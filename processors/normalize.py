"""normalize: map the attribute dialects of GenAI instrumentations onto the OTel GenAI names.

What it does
    Real traffic arrives in several dialects. This processor copies each known source
    attribute onto its canonical name, the OpenTelemetry GenAI semantic conventions plus a
    few tracepipe names fixed by the project:

    ===========================================  =============================================
    canonical                                    read from (first present wins, in this order)
    ===========================================  =============================================
    gen_ai.provider.name                         gen_ai.system, llm.provider, llm.system,
                                                 llm.vendor, provider, ... (values mapped to
                                                 the semconv well-known values) or inferred
                                                 from the model name
    gen_ai.operation.name                        llm.request.type, openinference.span.kind,
                                                 or inferred from the span name / keys
    gen_ai.request.model                         llm.request.model, llm.model_name, model, ...
    gen_ai.response.model                        llm.response.model, llm.model_name
    gen_ai.usage.input_tokens                    gen_ai.usage.prompt_tokens, llm.usage.*,
                                                 llm.token_count.prompt, prompt_tokens, ...
    gen_ai.usage.output_tokens                   ...completion_tokens, llm.token_count.completion
    gen_ai.usage.cache_read.input_tokens         gen_ai.usage.cache_read_input_tokens,
                                                 llm.token_count.prompt_details.cache_read, ...
    gen_ai.usage.cache_creation.input_tokens     gen_ai.usage.cache_creation_input_tokens, ...
    gen_ai.usage.cost_usd                        cost_usd, llm.cost.total, gen_ai.usage.cost
    gen_ai.conversation.id                       conversation_id, *.conversation_id
    user.id / session.id                         user_id, enduser.id, langfuse.user.id,
                                                 traceloop.association.properties.user_id, ...
    app.feature / tenant.id / user.tier          feature, tenant_id / org_id, user_tier,
    customer.id                                  customer_id, app.customer_id, customerId,
                                                 under the metadata prefixes below
    ===========================================  =============================================

    Metadata prefixes searched for user/session/conversation/feature/tenant/customer/tier keys:
    `traceloop.association.properties.`, `langsmith.metadata.`, `langfuse.trace.metadata.`,
    `langfuse.metadata.`, `metadata.`.

Rules
    - A value the span already carries under the canonical name is never overwritten.
    - Token counts become ints, cost a float, ids strings; unparseable values are skipped.
    - Source attributes are kept unless `keep_source_attributes: false`.
    - `mappings` from YAML add (or take precedence over) built-in source keys.

How it works
    Every source key of every dialect is expanded at build time into one dict
    `source key -> ((canonical, priority), ...)`. Per span, one C-level intersection of the
    span's attribute keys with that dict finds the hits; spans without any (most non-GenAI
    spans) cost one set operation and one provider/operation check.

Token semantics: `gen_ai.usage.input_tokens` is taken to INCLUDE cached tokens (cache read
and cache creation), as OpenAI reports prompt_tokens and as the semconv describes it; the
cost processor relies on that. No counts are adjusted here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from pipeline import semconv
from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.spans import Attributes, SpanBatch

# --- canonical names ---------------------------------------------------------------------

PROVIDER = semconv.GEN_AI_PROVIDER
OPERATION = semconv.GEN_AI_OPERATION
REQUEST_MODEL = semconv.GEN_AI_REQUEST_MODEL
RESPONSE_MODEL = semconv.GEN_AI_RESPONSE_MODEL
INPUT_TOKENS = semconv.GEN_AI_INPUT_TOKENS
OUTPUT_TOKENS = semconv.GEN_AI_OUTPUT_TOKENS
CACHE_READ_TOKENS = semconv.GEN_AI_CACHE_READ_TOKENS
CACHE_CREATION_TOKENS = semconv.GEN_AI_CACHE_CREATION_TOKENS
COST_USD = semconv.GEN_AI_COST_USD
CONVERSATION_ID = semconv.GEN_AI_CONVERSATION_ID
USER_ID = semconv.USER_ID
SESSION_ID = semconv.SESSION_ID
FEATURE = semconv.APP_FEATURE
TENANT_ID = semconv.TENANT_ID
CUSTOMER_ID = semconv.CUSTOMER_ID
USER_TIER = semconv.USER_TIER

CANONICAL_KEYS = (
    PROVIDER, OPERATION, REQUEST_MODEL, RESPONSE_MODEL, INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ_TOKENS,
    CACHE_CREATION_TOKENS, COST_USD, CONVERSATION_ID, USER_ID, SESSION_ID, FEATURE, TENANT_ID, CUSTOMER_ID,
    USER_TIER,
)  # fmt: skip

INT_KEYS = frozenset({INPUT_TOKENS, OUTPUT_TOKENS, CACHE_READ_TOKENS, CACHE_CREATION_TOKENS})
FLOAT_KEYS = frozenset({COST_USD})
STR_ID_KEYS = frozenset({CONVERSATION_ID, USER_ID, SESSION_ID, FEATURE, TENANT_ID, CUSTOMER_ID, USER_TIER})

# --- built-in dialects ---------------------------------------------------------------------
# canonical -> source keys, highest priority first. Order across dialects: current OTel
# names, older OTel names, OpenLLMetry, OpenInference, LangSmith/Langfuse, plain (Lumina).

_DIRECT: dict[str, tuple[str, ...]] = {
    PROVIDER: ("gen_ai.system", "llm.provider", "llm.system", "llm.vendor", "langfuse.observation.provider",
               "provider", "llm_provider", "ai.model.provider"),
    OPERATION: ("llm.request.type",),
    REQUEST_MODEL: ("llm.request.model", "gen_ai.model", "langfuse.observation.model.name", "ai.model.id",
                    "llm.model_name", "embedding.model_name", "model", "model_name", "llm.model"),
    RESPONSE_MODEL: ("llm.response.model", "ai.response.model", "llm.model_name", "embedding.model_name",
                     "response_model"),
    INPUT_TOKENS: ("gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens", "llm.usage.input_tokens",
                   "llm.token_count.prompt", "ai.usage.promptTokens", "ai.usage.inputTokens",
                   "prompt_tokens", "input_tokens", "usage.prompt_tokens", "usage.input_tokens"),
    OUTPUT_TOKENS: ("gen_ai.usage.completion_tokens", "llm.usage.completion_tokens", "llm.usage.output_tokens",
                    "llm.token_count.completion", "ai.usage.completionTokens", "ai.usage.outputTokens",
                    "completion_tokens", "output_tokens", "usage.completion_tokens", "usage.output_tokens"),
    CACHE_READ_TOKENS: ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.input_tokens.cached",
                        "gen_ai.usage.cached_tokens", "llm.usage.cache_read_input_tokens",
                        "llm.token_count.prompt_details.cache_read", "cache_read_input_tokens",
                        "cache_read_tokens", "cached_tokens"),
    CACHE_CREATION_TOKENS: ("gen_ai.usage.cache_creation_input_tokens", "gen_ai.usage.input_tokens.cache_write",
                            "llm.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write",
                            "cache_creation_input_tokens", "cache_write_tokens", "cache_creation_tokens"),
    COST_USD: ("gen_ai.usage.cost", "gen_ai.cost_usd", "llm.usage.cost", "llm.cost.total", "cost_usd",
               "total_cost_usd"),
    CONVERSATION_ID: ("gen_ai.conversation_id", "conversation.id", "conversation_id"),
    USER_ID: ("enduser.id", "gen_ai.user.id", "gen_ai.user", "langfuse.user.id", "langfuse.trace.user_id", "llm.user",
              "user_id", "userId"),
    SESSION_ID: ("gen_ai.session.id", "langfuse.session.id", "langfuse.trace.session_id", "session_id",
                 "sessionId"),
    FEATURE: ("feature", "feature_name"),
    TENANT_ID: ("tenant_id", "tenant", "org_id", "organization_id"),
    CUSTOMER_ID: ("app.customer_id", "app.customer.id", "customer_id", "customerId", "customer"),
    USER_TIER: ("user_tier", "plan_tier"),
}  # fmt: skip

# Metadata bags: PREFIX + suffix -> canonical. Checked after the direct keys.
_METADATA_PREFIXES = (
    "traceloop.association.properties.",
    "langsmith.metadata.",
    "langfuse.trace.metadata.",
    "langfuse.metadata.",
    "metadata.",
)
_METADATA_SUFFIXES: dict[str, tuple[str, ...]] = {
    USER_ID: ("user_id", "user.id", "userId", "user"),
    SESSION_ID: ("session_id", "session.id", "sessionId", "thread_id"),
    CONVERSATION_ID: ("conversation_id", "conversation.id", "conversationId"),
    FEATURE: ("feature", "feature_name", "app.feature"),
    TENANT_ID: ("tenant_id", "tenant.id", "tenantId", "tenant"),
    CUSTOMER_ID: ("customer_id", "customer.id", "customerId", "customer"),
    USER_TIER: ("user_tier", "user.tier", "tier", "plan"),
}

# Provider values of the dialects -> semconv well-known values of gen_ai.provider.name.
PROVIDER_VALUES: dict[str, str] = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure.openai": "azure.ai.openai",
    "az.ai.openai": "azure.ai.openai",
    "azure.ai.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure.ai.inference": "azure.ai.inference",
    "anthropic": "anthropic",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "aws.bedrock": "aws.bedrock",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "google": "gcp.gen_ai",
    "gcp.gen_ai": "gcp.gen_ai",
    "gemini": "gcp.gemini",
    "google_genai": "gcp.gen_ai",
    "gcp.gemini": "gcp.gemini",
    "vertexai": "gcp.vertex_ai",
    "vertex ai": "gcp.vertex_ai",
    "google vertex ai": "gcp.vertex_ai",
    "azure openai": "azure.ai.openai",
    "mistral ai": "mistral_ai",
    "amazon bedrock": "aws.bedrock",
    "aws bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "groq": "groq",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "mistral": "mistral_ai",
    "mistralai": "mistral_ai",
    "mistral_ai": "mistral_ai",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "x-ai": "x_ai",
    "x_ai": "x_ai",
}

# OpenLLMetry llm.request.type / OpenInference span kinds / span-name words -> operation.
OPERATION_VALUES: dict[str, str] = {
    "chat": "chat",
    "chat_completion": "chat",
    "chatcompletion": "chat",
    "completion": "text_completion",
    "completions": "text_completion",
    "text_completion": "text_completion",
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "create_embeddings": "embeddings",
    "generate_content": "generate_content",
    "execute_tool": "execute_tool",
    "invoke_agent": "invoke_agent",
    "create_agent": "create_agent",
}
_OPENINFERENCE_KIND = "openinference.span.kind"

# Model name prefixes -> provider (checked in order, lowercase). Ambiguous families served by
# many providers (llama, qwen, mixtral on groq/together/bedrock...) are left alone unless the
# name itself carries a provider prefix (`openai/`, `anthropic.`, `meta.llama` on Bedrock).
MODEL_PREFIX_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("openai/", "openai"),
    ("anthropic/", "anthropic"),
    ("google/", "gcp.gen_ai"),
    ("mistralai/", "mistral_ai"),
    ("cohere/", "cohere"),
    ("deepseek/", "deepseek"),
    ("x-ai/", "x_ai"),
    ("models/gemini", "gcp.gemini"),
    ("anthropic.", "aws.bedrock"),
    ("us.anthropic.", "aws.bedrock"),
    ("eu.anthropic.", "aws.bedrock"),
    ("apac.anthropic.", "aws.bedrock"),
    ("meta.llama", "aws.bedrock"),
    ("amazon.", "aws.bedrock"),
    ("cohere.", "aws.bedrock"),
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("text-davinci", "openai"),
    ("davinci", "openai"),
    ("babbage", "openai"),
    ("whisper", "openai"),
    ("dall-e", "openai"),
    ("tts-", "openai"),
    ("omni-moderation", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gcp.gemini"),
    ("mistral", "mistral_ai"),
    ("ministral", "mistral_ai"),
    ("codestral", "mistral_ai"),
    ("pixtral", "mistral_ai"),
    ("magistral", "mistral_ai"),
    ("devstral", "mistral_ai"),
    ("open-mistral", "mistral_ai"),
    ("open-mixtral", "mistral_ai"),
    ("command", "cohere"),
    ("embed-english", "cohere"),
    ("embed-multilingual", "cohere"),
    ("rerank-", "cohere"),
    ("deepseek", "deepseek"),
    ("grok", "x_ai"),
    ("sonar", "perplexity"),
)


def infer_provider(model: str) -> str | None:
    """The semconv provider value a model name clearly belongs to, else None."""
    m = model.strip().lower()
    for prefix, provider in MODEL_PREFIX_PROVIDERS:
        if m.startswith(prefix):
            if prefix in ("o1", "o3", "o4") and len(m) > 2 and m[2] not in "-_ ":
                continue  # "o1" / "o3-mini" yes, "o3something" no
            return provider
    return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value >= 0 and value == value and value != float("inf") else None
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return int(f) if f >= 0 and f == f and f != float("inf") else None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
    else:
        return None
    return f if f >= 0 and f == f and f != float("inf") else None


def _to_str(value: Any) -> str | None:
    if value is None or isinstance(value, list | dict | bytes):
        return None
    s = value if isinstance(value, str) else str(value)
    return s or None


def _convert(canonical: str, value: Any) -> Any:
    """The value as stored under `canonical`, or None to skip it."""
    if canonical in INT_KEYS:
        return _to_int(value)
    if canonical in FLOAT_KEYS:
        return _to_float(value)
    if canonical == PROVIDER:
        s = _to_str(value)
        return PROVIDER_VALUES.get(s.lower(), s.lower()) if s else None
    if canonical == OPERATION:
        s = _to_str(value)
        return OPERATION_VALUES.get(s.lower(), s.lower()) if s else None
    if value is None or value == "":
        return None
    if canonical in STR_ID_KEYS or canonical in (REQUEST_MODEL, RESPONSE_MODEL):
        return _to_str(value)
    return value


def build_source_map(extra: dict[str, str] | None = None) -> dict[str, tuple[tuple[str, int], ...]]:
    """source key -> ((canonical, priority), ...); lower priority number wins. User mappings first."""
    targets: dict[str, list[tuple[str, int]]] = {}
    prio = 0
    for source, canonical in (extra or {}).items():
        targets.setdefault(source, []).append((canonical, prio))
        prio += 1
    for canonical, sources in _DIRECT.items():
        for source in sources:
            targets.setdefault(source, []).append((canonical, prio))
            prio += 1
    for canonical, suffixes in _METADATA_SUFFIXES.items():
        for prefix in _METADATA_PREFIXES:
            for suffix in suffixes:
                targets.setdefault(prefix + suffix, []).append((canonical, prio))
                prio += 1
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for source, pairs in targets.items():
        # A canonical key is never a source of itself (user.id read as user.id is a no-op).
        kept = tuple(p for p in pairs if p[0] != source)
        if kept:
            out[source] = kept
    return out


class NormalizeConfig(ComponentConfig):
    mappings: dict[str, str] = Field(
        default_factory=dict,
        description="Extra source attribute -> canonical attribute mappings (`my.model: gen_ai.request.model`). "
        "They take precedence over the built-in dialects.",
    )
    keep_source_attributes: bool = Field(
        True, description="Keep the dialect attributes after copying them (false removes every mapped source key)."
    )
    infer_provider: bool = Field(
        True, description="Set gen_ai.provider.name from the model name when no dialect carries it."
    )
    infer_operation: bool = Field(
        True,
        description="Set gen_ai.operation.name (chat, text_completion, embeddings) when absent but clear "
        "from the span (OpenLLMetry request type, OpenInference span kind, span name).",
    )

    @field_validator("mappings")
    @classmethod
    def _non_empty(cls, v: dict[str, str]) -> dict[str, str]:
        for source, target in v.items():
            if not source or not target:
                raise ValueError("mapping keys and values must be non-empty attribute names")
            if source == target:
                raise ValueError(f"mapping {source!r} maps an attribute onto itself")
        return v


_MODEL_CACHE_LIMIT = 10_000


class NormalizeProcessor(BaseProcessor):
    """Copies dialect attributes onto the canonical GenAI names, in place."""

    def __init__(self, component_id: str, config: NormalizeConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self.source_map = build_source_map(config.mappings)
        self._source_keys = frozenset(self.source_map)
        self._provider_by_model: dict[str, str | None] = {}

    # --- hot path --------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        source_keys = self._source_keys
        infer_p = self.config.infer_provider
        infer_o = self.config.infer_operation
        for span in batch.spans:
            attrs = span.attributes
            hits = source_keys.intersection(attrs)  # C-level; far cheaper than attrs.keys() & set
            if hits:
                self._apply(attrs, hits)
            if infer_p and PROVIDER not in attrs and (REQUEST_MODEL in attrs or RESPONSE_MODEL in attrs):
                self._infer_provider(attrs)
            if infer_o and OPERATION not in attrs and (hits or _OPENINFERENCE_KIND in attrs):
                op = self._infer_operation(span.name, attrs)
                if op is not None:
                    attrs[OPERATION] = op
        return batch

    def normalize_attributes(self, attrs: Attributes, span_name: str = "") -> None:
        """Normalize one attribute dict in place (the per-span work of `process`)."""
        hits = self._source_keys.intersection(attrs)
        if hits:
            self._apply(attrs, hits)
        if self.config.infer_provider and PROVIDER not in attrs and (REQUEST_MODEL in attrs or RESPONSE_MODEL in attrs):
            self._infer_provider(attrs)
        if self.config.infer_operation and OPERATION not in attrs and (hits or _OPENINFERENCE_KIND in attrs):
            op = self._infer_operation(span_name, attrs)
            if op is not None:
                attrs[OPERATION] = op

    def _apply(self, attrs: Attributes, hits: frozenset[str]) -> None:
        smap = self.source_map
        best: dict[str, tuple[int, Any]] = {}
        for source in hits:
            raw = attrs[source]
            for canonical, prio in smap[source]:
                if canonical in attrs:
                    continue  # never overwrite what the span already carries
                cur = best.get(canonical)
                if cur is not None and cur[0] < prio:
                    continue
                value = _convert(canonical, raw)
                if value is not None:
                    best[canonical] = (prio, value)
        for canonical, (_, value) in best.items():
            attrs[canonical] = value
        if not self.config.keep_source_attributes:
            for source in hits:
                # Drop a source only once everything it maps to is set: an unparseable value stays.
                if all(canonical in attrs for canonical, _ in smap[source]):
                    del attrs[source]

    def _infer_provider(self, attrs: Attributes) -> None:
        model = attrs.get(RESPONSE_MODEL) or attrs.get(REQUEST_MODEL)
        if not isinstance(model, str) or not model:
            return
        cache = self._provider_by_model
        if model in cache:
            provider = cache[model]
        else:
            provider = infer_provider(model)
            if len(cache) >= _MODEL_CACHE_LIMIT:
                cache.clear()
            cache[model] = provider
        if provider is not None:
            attrs[PROVIDER] = provider

    @staticmethod
    def _infer_operation(span_name: str, attrs: Attributes) -> str | None:
        kind = attrs.get(_OPENINFERENCE_KIND)
        if isinstance(kind, str):
            k = kind.upper()
            if k == "EMBEDDING":
                return "embeddings"
            if k == "LLM":
                if "llm.input_messages.0.message.role" in attrs or "llm.input_messages" in attrs:
                    return "chat"
                if "llm.prompts" in attrs or "llm.prompts.0.prompt.text" in attrs:
                    return "text_completion"
                return _operation_from_name(span_name)
            if k == "AGENT":
                return "invoke_agent"
            if k == "TOOL":
                return "execute_tool"
            return None
        if REQUEST_MODEL not in attrs and RESPONSE_MODEL not in attrs:
            return None
        return _operation_from_name(span_name)


def _operation_from_name(name: str) -> str | None:
    """`chat gpt-4o` (semconv), `openai.chat` (OpenLLMetry), `ChatCompletion` (OpenInference)."""
    if not name:
        return None
    low = name.lower()
    first = low.split(" ", 1)[0]
    op = OPERATION_VALUES.get(first)
    if op is None and "." in first:
        op = OPERATION_VALUES.get(first.rsplit(".", 1)[1])
    if op is None:
        op = OPERATION_VALUES.get(first.replace(".", "_"))
    return op


factory = Factory(
    "normalize",
    NormalizeConfig,
    NormalizeProcessor,
    "Map GenAI attribute dialects (OTel old/new, OpenLLMetry, OpenInference, Langfuse/LangSmith, plain) onto "
    "the OTel GenAI semantic conventions.",
)
