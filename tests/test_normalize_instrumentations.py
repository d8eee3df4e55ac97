"""Spans from the REAL instrumentation packages, driving the real `openai` client against a local
fake OpenAI server, come out of normalize + cost with the canonical names and genai-prices' price.

Each instrumentation runs in its own subprocess (tests/genai_capture.py): all three patch the
same `openai` methods. The spans travel as OTLP protobuf (the SDK's own encoder) and are decoded
by tracepipe's OTLP decoder, as they would arrive at the receiver.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.component import ComponentContext
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.cost import CostConfig, CostProcessor
from processors.normalize import NormalizeConfig, NormalizeProcessor
from tests.fake_openai import CHAT_RESPONSE_MODEL, CHAT_USAGE, EMBED_USAGE, STREAM_USAGE, FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTATIONS = {
    "openai-v2": "opentelemetry.instrumentation.openai_v2",
    "openllmetry": "opentelemetry.instrumentation.openai",
    "openinference": "openinference.instrumentation.openai",
}
# Which instrumentations record OpenAI's prompt_tokens_details.cached_tokens (checked below).
RECORDS_CACHED_TOKENS = {"openai-v2": False, "openllmetry": True, "openinference": True}


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def capture(which: str, base_url: str) -> list[Span]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.genai_capture",
        which,
        base_url,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return decode_request(ExportTraceServiceRequest.FromString(out))


def chain(spans: list[Span]) -> list[Span]:
    ctx = ComponentContext("t", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    batch = SpanBatch(spans, "b1")
    batch = NormalizeProcessor("normalize", NormalizeConfig(), ctx).process(batch)
    return CostProcessor("cost", CostConfig(), ctx).process(batch).spans


def expected_cost(model: str, inp: int, out: int, cached: int) -> float:
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached or None)
    return float(calc_price(usage, model, provider_id="openai").total_price)


@pytest.mark.parametrize("which", list(INSTRUMENTATIONS))
async def test_real_instrumentation_spans_normalize_and_price(which: str, fake_openai: FakeOpenAI) -> None:
    if importlib.util.find_spec(INSTRUMENTATIONS[which]) is None:
        pytest.fail(f"{which} is not installed: pip install -e '.[test]'")
    spans = chain(await capture(which, fake_openai.base_url))
    genai_spans = [s for s in spans if "gen_ai.usage.input_tokens" in s.attributes]
    assert len(genai_spans) == 3, [s.name for s in spans]

    chats = [s for s in genai_spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    embeds = [s for s in genai_spans if s.attributes.get("gen_ai.operation.name") == "embeddings"]
    assert len(chats) == 2 and len(embeds) == 1

    by_input = {s.attributes["gen_ai.usage.input_tokens"]: s.attributes for s in chats}
    for usage in (CHAT_USAGE, STREAM_USAGE):
        a = by_input[usage["prompt_tokens"]]
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.response.model"] == CHAT_RESPONSE_MODEL
        assert a["gen_ai.request.model"] in ("gpt-4o-mini", CHAT_RESPONSE_MODEL)
        assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        cached = a.get("gen_ai.usage.cache_read.input_tokens", 0)
        if RECORDS_CACHED_TOKENS[which]:
            assert cached == usage["cached_tokens"]
        assert a["tracepipe.cost.source"] == "genai-prices"
        assert a["gen_ai.usage.cost_usd"] == pytest.approx(
            expected_cost(CHAT_RESPONSE_MODEL, usage["prompt_tokens"], usage["completion_tokens"], cached)
        )
        assert "tracepipe.cost.unpriced" not in a

    e = embeds[0].attributes
    assert e["gen_ai.request.model"] == "text-embedding-3-small"
    assert e["gen_ai.provider.name"] == "openai"
    assert e["gen_ai.usage.input_tokens"] == EMBED_USAGE["prompt_tokens"]
    assert e["gen_ai.usage.cost_usd"] == pytest.approx(
        expected_cost("text-embedding-3-small", EMBED_USAGE["prompt_tokens"], 0, 0)
    )

    if which == "openllmetry":  # the OpenAI `user` parameter, recorded as gen_ai.user
        assert by_input[CHAT_USAGE["prompt_tokens"]]["user.id"] == "user-42"
