"""The replay runner against the local fake OpenAI server (retries, backoff, timeouts, a bad answer never
stopping the others), the capture of a span's messages, the create filters' validation and pricing."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from pipeline.replay.capture import item_of, validate_create
from pipeline.replay.pricing import Pricer
from pipeline.replay.results import validate_results
from pipeline.replay.run import RunSettings, request_messages, run_items
from processors.cost import CostConfig, ModelOverride
from tests.fake_openai import CHAT_RESPONSE_MODEL, CHAT_USAGE, FakeOpenAI


def _item(i: int, text: str = "hello") -> dict[str, Any]:
    return {"item": i, "trace_id": f"{i:032x}", "span_id": f"{i:016x}",
            "input_messages": [{"role": "system", "content": "old"}, {"role": "user", "content": text}]}


def _run(server: FakeOpenAI, items: list[dict[str, Any]], **settings: Any) -> tuple[list[dict[str, Any]], list[float]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    async def go() -> list[dict[str, Any]]:
        await server.start()
        try:
            return await run_items(items, RunSettings(server.base_url + "/v1", "gpt-4o-mini", **settings),
                                   sleep=sleep)
        finally:
            await server.stop()

    return asyncio.run(go()), waits


def test_retryable_answers_are_retried_with_exponential_backoff_until_the_call_succeeds() -> None:
    server = FakeOpenAI(answer=lambda body: body["messages"][-1]["content"].upper(), errors=[429, 502, 503])
    results, waits = _run(server, [_item(0)], retries=3, backoff=0.5)
    (r,) = results
    assert r["error"] is None and r["attempts"] == 4 and r["output"] == "HELLO"
    assert waits == [0.5, 1.0, 2.0]
    assert (r["input_tokens"], r["output_tokens"], r["cache_read_tokens"]) == (
        CHAT_USAGE["prompt_tokens"], CHAT_USAGE["completion_tokens"], CHAT_USAGE["cached_tokens"])
    assert r["response_model"] == CHAT_RESPONSE_MODEL and r["duration_ns"] > 0


def test_exhausted_retries_and_client_errors_fail_one_item_and_never_the_others() -> None:
    results, waits = _run(FakeOpenAI(errors=[503, 503]), [_item(0)], retries=1)
    assert results[0]["error"].startswith("HTTP 503") and results[0]["attempts"] == 2 and waits == [0.5]
    server = FakeOpenAI(errors=[400])
    results, waits = _run(server, [_item(0), _item(1)], retries=3, concurrency=1)
    assert results[0]["error"].startswith("HTTP 400") and results[0]["attempts"] == 1 and waits == []  # not retried
    assert results[1]["error"] is None and results[1]["output"] == "Hello!"
    assert server.faults["requests"] == 2


def test_a_slow_endpoint_times_out_and_concurrency_stays_bounded() -> None:
    slow = FakeOpenAI(delay=0.5)
    results, waits = _run(slow, [_item(0)], retries=1, timeout=0.1)
    assert results[0]["error"].startswith("TimeoutError") and results[0]["attempts"] == 2 and len(waits) == 1
    busy = FakeOpenAI(delay=0.05)
    results, _ = _run(busy, [_item(i) for i in range(12)], concurrency=3)
    assert all(r["error"] is None for r in results) and [r["item"] for r in results] == list(range(12))
    assert busy.faults["peak"] == 3


def test_a_system_prompt_replaces_the_original_system_messages() -> None:
    msgs = request_messages(_item(0), "new rules")
    assert msgs == [{"role": "system", "content": "new rules"}, {"role": "user", "content": "hello"}]
    assert request_messages(_item(0), None)[0] == {"role": "system", "content": "old"}


def _row(attrs: dict[str, Any]) -> tuple[Any, ...]:
    return ("a" * 32, "b" * 16, time.time_ns(), "bot", "openai", "gpt-4o", "", "faq", 10, 5, 0, 0.01, 1000, attrs)


def test_capture_reads_semconv_and_openllmetry_messages_with_system_instructions() -> None:
    semconv = item_of(_row({
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hey"}]}]),
    }))
    assert semconv is not None
    assert semconv["input_messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert semconv["original_output"] == "Hey" and semconv["model"] == "gpt-4o" and semconv["cost_usd"] == 0.01
    flat = item_of(_row({"gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Q",
                         "gen_ai.completion.0.content": "A"}))
    assert flat is not None and flat["input_messages"] == [{"role": "user", "content": "Q"}]
    assert flat["original_output"] == "A"
    assert item_of(_row({"gen_ai.system_instructions": "only a system prompt"})) is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"name": "a b"}, "name:"),
        ({"name": "ok", "limit": 0}, "limit:"),
        ({"name": "ok", "since": "forever"}, "since:"),
        ({"name": "ok", "from": "yesterday"}, "from:"),
        ({"name": "ok", "score_below": float("nan")}, "score_below:"),
        ({"name": "ok", "score_name": "x"}, "score_name:"),
        ({"name": "ok", "colour": "red"}, "colour:"),
    ],
)
def test_create_bodies_are_refused_naming_the_field(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=f"^{error}"):
        validate_create(body)


def test_results_must_name_items_of_the_set() -> None:
    run_id, rows = validate_results({"run_id": "r-1", "results": [{"item": 2, "model": "m", "similarity": 0.5}]}, {2})
    assert run_id == "r-1" and rows[0]["item"] == 2
    for bad, error in (({"item": 3, "model": "m"}, "results[0].item:"),
                       ({"item": 2, "model": "m", "similarity": 1.5}, "results[0].similarity:"),
                       ({"item": 2, "model": "m", "trace_id": "xyz"}, "results[0].trace_id:")):
        with pytest.raises(ValueError, match="^" + re.escape(error)):
            validate_results({"run_id": "r-1", "results": [bad]}, {2})


def test_replays_are_priced_like_the_cost_processor_prices_spans() -> None:
    now = time.time_ns()
    plain = Pricer().costs([{"model": "gpt-4o-mini", "response_model": CHAT_RESPONSE_MODEL, "input_tokens": 1200,
                             "output_tokens": 80, "cache_read_tokens": 1024}, {"model": "no-such-model-x",
                                                                               "input_tokens": 5}], now)
    expected = calc_price(Usage(input_tokens=1200, output_tokens=80, cache_read_tokens=1024), CHAT_RESPONSE_MODEL,
                          provider_id="openai").total_price
    assert plain[0] == pytest.approx(float(expected), rel=1e-9) and plain[1] is None
    custom = Pricer(CostConfig(overrides=[ModelOverride(model="in-house", input_per_mtok=1.0, output_per_mtok=2.0)]))
    assert custom.costs([{"model": "in-house", "input_tokens": 1_000_000, "output_tokens": 500_000}], now) == [
        pytest.approx(2.0)]
