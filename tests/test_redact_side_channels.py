"""No value through a side channel: log lines (safe_value, tracebacks) and metric labels
(the label guard, the prometheus sink's `operation`), even when no redact processor runs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from pipeline.component import ComponentContext
from pipeline.logs import JsonFormatter, TextFormatter, safe_exception_text, safe_value
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import LabelGuard, Telemetry
from processors.cost import CostConfig, CostProcessor
from sinks.prometheus import GENAI_OPERATIONS, PrometheusSink, PrometheusSinkConfig, operation_label

KEY = "sk-proj-" + "Ab3dEf9hIjK2mNoP4qRsT6uVwX8yZ0aB1cD"


def test_safe_value_redacts_strips_control_characters_and_cuts() -> None:
    assert safe_value(f"model {KEY}").startswith("model [REDACTED:openai_key:")
    assert KEY not in safe_value(KEY[:6] + "\u200b" + KEY[6:])  # disguises too
    assert safe_value("gpt-4o\nFAKE LOG LINE") == "gpt-4o?FAKE LOG LINE"
    long = safe_value("x" * 500, limit=64)
    assert len(long) == 64 and long.endswith("...")
    assert safe_value("gpt-4o-mini") == "gpt-4o-mini"


def test_tracebacks_withhold_messages_that_may_quote_data() -> None:
    data = "the prompt " + KEY  # source lines appear in tracebacks: the values must not be literals
    caught: ConnectionError | None = None
    try:
        try:
            float(data)
        except ValueError as e:
            raise ConnectionError("store at 127.0.0.1:6379 refused, token " + KEY) from e
    except ConnectionError as e:
        caught = e
    assert caught is not None
    text = safe_exception_text(caught)
    assert KEY not in text and "the prompt" not in text
    assert "ValueError: (message withheld" in text and "ConnectionError: store at 127.0.0.1:6379 refused" in text
    assert "float(data)" in text  # frames are kept
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", None, (ConnectionError, caught, None))
    for fmt in (TextFormatter(), JsonFormatter()):
        out = fmt.format(record)
        assert KEY not in out and "message withheld" in out


def test_label_guard_redacts_and_caps_each_value_once() -> None:
    guard = LabelGuard(limit=3, max_length=32)
    assert guard("model", KEY).startswith("[REDACTED:openai_key:")
    assert guard("model", KEY) == guard("model", KEY)
    assert len(guard("model", "m" * 100)) == 32
    assert guard("model", "gpt-4o") == "gpt-4o"
    assert guard("model", "another") == "other"  # the fourth distinct value


def test_operation_label_is_a_genai_operation_or_other() -> None:
    assert {operation_label(op) for op in GENAI_OPERATIONS} == set(GENAI_OPERATIONS)
    assert operation_label(None) == operation_label(f"chat {KEY}") == operation_label(3) == "other"


def test_prometheus_sink_never_labels_with_span_names_or_raw_values() -> None:
    telemetry = Telemetry()
    ctx = ComponentContext("prometheus", telemetry, MemoryStateStore(), Path("."), logging.getLogger("t"))
    sink = PrometheusSink("prometheus", PrometheusSinkConfig(), ctx)
    res = Resource({"service.name": f"svc {KEY}"})
    spans = [
        Span("a" * 32, "b" * 16, f"GET /users/jane.doe@acme-corp.io {KEY}", 0, 10, resource=res),
        Span("a" * 32, "c" * 16, "chat", 0, 10, resource=res,
             attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": f"ft:{KEY}"}),
    ]  # fmt: skip
    asyncio.run(sink.write(SpanBatch(spans, "b")))
    text = telemetry.exposition()[0].decode()
    assert KEY not in text and "jane.doe" not in text and "/users" not in text
    assert 'operation="other"' in text and 'operation="chat"' in text
    assert 'model="ft:[REDACTED:openai_key:' in text and 'service="svc [REDACTED:openai_key:' in text


def test_cost_processor_logs_an_unpriced_model_only_redacted(caplog: pytest.LogCaptureFixture) -> None:
    ctx = ComponentContext("cost", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t.cost"))
    proc = CostProcessor("cost", CostConfig(), ctx)
    span = Span("a" * 32, "b" * 16, "chat", 0, 10, attributes={
        "gen_ai.provider.name": "openai", "gen_ai.request.model": f"custom-{KEY}",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="t.cost"):
        proc.process(SpanBatch([span], "b"))
    assert "no price for model" in caplog.text
    assert KEY not in caplog.text and "[REDACTED:openai_key:" in caplog.text
