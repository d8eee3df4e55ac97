"""The attribute names tracepipe works with: OTel GenAI semantic conventions plus accounting keys.

One place for the canonical names (the normalize processor maps instrumentation dialects
onto them). Modules that read or write these attributes import them from here.

The model identity (see README "One model identity"): `model` is the REQUEST model
(`gen_ai.request.model`, what the application asked for and configures), falling back to
the response model when a span has no request model. The response model (the dated,
billed name such as `gpt-4o-2024-08-06`) is kept as `response_model` and can be grouped
by separately. `model_of` / `response_model_of` are the one definition every view uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# --- gen_ai.* (OTel GenAI semantic conventions) --------------------------------------------
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # older name of gen_ai.provider.name
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_CACHE_CREATION_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_COST_USD = "gen_ai.usage.cost_usd"  # tracepipe's priced cost
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # JSON list of {role, parts: [{type, content}]}
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"

# --- accounting: who and what ----------------------------------------------------------------
USER_ID = "user.id"
USER_TIER = "user.tier"
SESSION_ID = "session.id"
TENANT_ID = "tenant.id"  # the tracepipe tenant owning the data (stamped from the auth token)
CUSTOMER_ID = "customer.id"  # the application's end customer (a separate dimension from tenant)
APP_FEATURE = "app.feature"
SERVICE_NAME = "service.name"

# Attributes that identify who and what a span is accounted to. The context processor copies
# them from ancestor spans onto descendants (processors/context.py).
CONTEXT_KEYS: tuple[str, ...] = (
    USER_ID,
    TENANT_ID,
    CUSTOMER_ID,
    SESSION_ID,
    GEN_AI_CONVERSATION_ID,
    APP_FEATURE,
    USER_TIER,
)


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def model_of(attributes: Mapping[str, Any]) -> str | None:
    """The span's model identity: the request model, else the response model (None: not GenAI)."""
    return _text(attributes.get(GEN_AI_REQUEST_MODEL)) or _text(attributes.get(GEN_AI_RESPONSE_MODEL))


def response_model_of(attributes: Mapping[str, Any]) -> str | None:
    """The billed (response) model, else the request model."""
    return _text(attributes.get(GEN_AI_RESPONSE_MODEL)) or _text(attributes.get(GEN_AI_REQUEST_MODEL))
