"""normalize: every dialect maps onto the canonical gen_ai.* names; canonical values are never overwritten."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.component import ComponentContext
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.normalize import NormalizeConfig, NormalizeProcessor, build_source_map, infer_provider


def make_proc(**options: Any) -> NormalizeProcessor:
    ctx = ComponentContext("normalize", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("test"))
    return NormalizeProcessor("normalize", NormalizeConfig(**options), ctx)


def run(attrs: dict[str, Any], name: str = "span", **options: Any) -> dict[str, Any]:
    span = Span("0" * 32, "1" * 16, name, 1, 2, attributes=dict(attrs))
    out = make_proc(**options).process(SpanBatch([span], "b1"))
    assert out.spans[0] is span
    return span.attributes


def test_older_gen_ai_names_map_onto_current_ones() -> None:
    a = run(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
            "gen_ai.usage.cache_read_input_tokens": 4,
            "gen_ai.usage.cache_creation_input_tokens": 2,
        }
    )
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 10
    assert a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 2
    assert a["gen_ai.system"] == "openai"  # sources kept by default


def test_openllmetry_dialect() -> None:
    a = run(
        {
            "llm.request.type": "completion",
            "llm.vendor": "Anthropic",
            "llm.request.model": "claude-3-haiku-20240307",
            "llm.response.model": "claude-3-haiku-20240307",
            "llm.usage.prompt_tokens": 100,
            "llm.usage.completion_tokens": 20,
            "llm.usage.total_tokens": 120,
            "traceloop.association.properties.user_id": "u-1",
            "traceloop.association.properties.session_id": "s-1",
            "traceloop.association.properties.feature": "search",
            "traceloop.association.properties.customer_id": "acme",
            "traceloop.association.properties.tier": "pro",
        },
        name="anthropic.completion",
    )
    assert a["gen_ai.operation.name"] == "text_completion"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-3-haiku-20240307"
    assert a["gen_ai.response.model"] == "claude-3-haiku-20240307"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (100, 20)
    assert a["user.id"] == "u-1"
    assert a["session.id"] == "s-1"
    assert a["app.feature"] == "search"
    assert a["customer.id"] == "acme"
    assert a["user.tier"] == "pro"


def test_openinference_dialect() -> None:
    a = run(
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.provider": "azure",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.token_count.prompt": 50,
            "llm.token_count.completion": 7,
            "llm.token_count.total": 57,
            "llm.token_count.prompt_details.cache_read": 32,
            "llm.token_count.prompt_details.cache_write": 3,
            "llm.input_messages.0.message.role": "user",
            "user.id": "u-9",
            "session.id": "s-9",
        },
        name="ChatCompletion",
    )
    # llm.provider is more specific than llm.system (the API vendor): azure hosts openai models.
    assert a["gen_ai.provider.name"] == "azure.ai.openai"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.usage.input_tokens"] == 50
    assert a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.usage.cache_read.input_tokens"] == 32
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 3
    assert a["user.id"] == "u-9" and a["session.id"] == "s-9"


def test_openinference_embedding_span() -> None:
    a = run(
        {"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
         "llm.token_count.prompt": 2},
        name="CreateEmbeddings",
    )  # fmt: skip
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.request.model"] == "text-embedding-3-small"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.usage.input_tokens"] == 2


def test_langfuse_and_langsmith_metadata() -> None:
    a = run(
        {
            "langfuse.user.id": "lf-user",
            "langfuse.session.id": "lf-session",
            "langfuse.trace.metadata.tenant_id": "t-1",
            "langsmith.metadata.feature": "summarize",
            "langsmith.metadata.conversation_id": "conv-1",
            "langsmith.metadata.user_tier": "free",
        }
    )
    assert a["user.id"] == "lf-user"
    assert a["session.id"] == "lf-session"
    assert a["tenant.id"] == "t-1"
    assert a["app.feature"] == "summarize"
    assert a["gen_ai.conversation.id"] == "conv-1"
    assert a["user.tier"] == "free"


def test_plain_lumina_style_attributes() -> None:
    a = run(
        {
            "model": "claude-3-5-sonnet-20241022",
            "prompt_tokens": "1000",
            "completion_tokens": 12.0,
            "cost_usd": "0.0123",
            "user_id": 42,
            "session_id": "sess",
            "feature": "chatbot",
            "customer_id": "cust-7",
        }
    )
    assert a["gen_ai.request.model"] == "claude-3-5-sonnet-20241022"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.usage.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 12
    assert a["gen_ai.usage.cost_usd"] == pytest.approx(0.0123)
    assert a["user.id"] == "42"
    assert a["session.id"] == "sess"
    assert a["app.feature"] == "chatbot"
    assert a["customer.id"] == "cust-7"
    assert "tenant.id" not in a  # the end customer is not the tracepipe tenant


def test_tenant_and_customer_are_separate_and_current_names_beat_plain_ones() -> None:
    a = run({"tenant_id": "tenant", "customer_id": "customer", "gen_ai.usage.prompt_tokens": 5, "prompt_tokens": 9})
    assert a["tenant.id"] == "tenant"
    assert a["customer.id"] == "customer"
    assert run({"app.customer_id": "acme"})["customer.id"] == "acme"
    assert a["gen_ai.usage.input_tokens"] == 5


def test_never_overwrites_a_canonical_value() -> None:
    a = run(
        {
            "gen_ai.provider.name": "aws.bedrock",
            "gen_ai.system": "anthropic",
            "gen_ai.usage.input_tokens": 77,
            "gen_ai.usage.prompt_tokens": 1,
            "gen_ai.request.model": "anthropic.claude-3-haiku",
            "model": "other",
            "user.id": "keep-me",
            "user_id": "not-me",
            "gen_ai.operation.name": "generate_content",
            "llm.request.type": "chat",
            "gen_ai.usage.cost_usd": 0.5,
            "cost_usd": 9.0,
        }
    )
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.usage.input_tokens"] == 77
    assert a["gen_ai.request.model"] == "anthropic.claude-3-haiku"
    assert a["user.id"] == "keep-me"
    assert a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.usage.cost_usd"] == 0.5


def test_remove_source_attributes_when_configured() -> None:
    a = run(
        {"gen_ai.system": "openai", "llm.usage.prompt_tokens": 3, "user_id": "u", "http.method": "POST"},
        keep_source_attributes=False,
    )
    assert a == {
        "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 3,
        "user.id": "u",
        "http.method": "POST",
    }


def test_removal_keeps_sources_that_could_not_be_mapped() -> None:
    a = run({"prompt_tokens": "many", "completion_tokens": 4}, keep_source_attributes=False)
    assert a == {"prompt_tokens": "many", "gen_ai.usage.output_tokens": 4}


def test_extra_mappings_from_config_take_precedence() -> None:
    a = run(
        {"my.model": "gpt-4o-mini", "model": "ignored", "acct": "a-1"},
        mappings={"my.model": "gen_ai.request.model", "acct": "tenant.id"},
    )
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["tenant.id"] == "a-1"
    assert a["gen_ai.provider.name"] == "openai"


def test_bad_mapping_config_is_rejected() -> None:
    with pytest.raises(ValidationError, match="onto itself"):
        NormalizeConfig(mappings={"a": "a"})
    with pytest.raises(ValidationError):
        NormalizeConfig(keep_source_attributes="maybe")


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("o1-preview", "openai"),
        ("o3", "openai"),
        ("text-embedding-3-small", "openai"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("gemini-2.0-flash", "gcp.gemini"),
        ("models/gemini-1.5-pro", "gcp.gemini"),
        ("mistral-large-latest", "mistral_ai"),
        ("command-r-plus", "cohere"),
        ("deepseek-chat", "deepseek"),
        ("grok-2", "x_ai"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "aws.bedrock"),
        ("meta.llama3-70b-instruct-v1:0", "aws.bedrock"),
        ("llama-3.1-8b-instant", None),  # served by many providers: not guessed
        ("o3something", None),
        ("my-finetune", None),
    ],
)
def test_provider_inferred_from_model_name(model: str, provider: str | None) -> None:
    assert infer_provider(model) == provider
    a = run({"gen_ai.request.model": model})
    assert a.get("gen_ai.provider.name") == provider


def test_inference_can_be_turned_off() -> None:
    a = run({"model": "gpt-4o", "llm.request.type": "chat"}, infer_provider=False, infer_operation=False)
    assert "gen_ai.provider.name" not in a
    assert a["gen_ai.operation.name"] == "chat"  # mapped, not inferred
    a = run({"model": "gpt-4o"}, name="openai.chat", infer_operation=False)
    assert "gen_ai.operation.name" not in a


@pytest.mark.parametrize(
    ("name", "attrs", "op"),
    [
        ("chat gpt-4o", {"gen_ai.request.model": "gpt-4o"}, None),  # no dialect hit: left alone
        ("openai.chat", {"model": "gpt-4o"}, "chat"),
        ("openai.embeddings", {"llm.request.model": "text-embedding-3-small"}, "embeddings"),
        ("text_completion davinci", {"model": "davinci-002"}, "text_completion"),
        ("Completions", {"openinference.span.kind": "LLM", "llm.prompts": ["hi"]}, "text_completion"),
        ("agent", {"openinference.span.kind": "AGENT"}, "invoke_agent"),
        ("db query", {"model": "User"}, None),
    ],
)
def test_operation_inferred_only_when_clear(name: str, attrs: dict[str, Any], op: str | None) -> None:
    assert run(attrs, name=name).get("gen_ai.operation.name") == op


def test_non_genai_span_is_untouched() -> None:
    attrs = {"http.method": "GET", "http.route": "/x", "db.system": "postgresql", "thread.id": 7}
    assert run(attrs) == attrs


def test_unparseable_values_are_skipped() -> None:
    a = run({"prompt_tokens": "many", "completion_tokens": -3, "cost_usd": "n/a", "user_id": ""})
    for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cost_usd", "user.id"):
        assert key not in a


def test_source_map_has_no_self_mappings() -> None:
    smap = build_source_map()
    assert all(canonical != source for source, pairs in smap.items() for canonical, _ in pairs)
    assert "user.id" not in smap and "gen_ai.usage.input_tokens" not in smap


@pytest.mark.parametrize(
    ("value", "provider"),
    [
        ("OpenAI", "openai"),
        ("Anthropic", "anthropic"),
        ("Vertex AI", "gcp.vertex_ai"),
        ("MistralAI", "mistral_ai"),
        ("az.ai.openai", "azure.ai.openai"),
        ("aws", "aws.bedrock"),
        ("ollama", "ollama"),  # not a well-known value: kept, lowercased
    ],
)
def test_provider_values_map_to_semconv_well_known_values(value: str, provider: str) -> None:
    assert run({"gen_ai.system": value})["gen_ai.provider.name"] == provider
