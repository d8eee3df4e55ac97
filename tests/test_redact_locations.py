"""The redact processor in every place a span carries text (names, keys, scope, trace_state,
status, links, resource, bytes, nested values) and under every disguise of
processors/redact_disguise.py; cards wherever they start; the shipped chain order; the
plain-value API for log records; the clean corpus re-measured over four seeds."""

from __future__ import annotations

import base64
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.component import ComponentContext
from pipeline.config import DEFAULT_CONFIG_PATH
from pipeline.spans import Event, Link, Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors import PROCESSOR_FACTORIES
from processors.redact import RedactConfig, RedactProcessor
from processors.redact_disguise import b64_text, unveil
from tests.redact_corpus import DISGUISES, Canary, canaries, card_after_number, clean_values, disguised_canaries
from tests.test_redact import FP_BOUND, counted, needs_hyperscan

ROOT = Path(__file__).resolve().parents[1]
ENGINES = [pytest.param("hyperscan", marks=needs_hyperscan), "python"]

# Where a canary is planted; the long prompt text goes into values, the short phrase into names.
LOCATIONS = (
    "span_name",
    "event_name",
    "attribute_key",
    "nested_key",
    "scope_name",
    "scope_version",
    "trace_state",
    "status_message",
    "link_attribute",
    "link_trace_state",
    "resource_attribute",
    "bytes_value",
    "bytes_not_utf8",
    "nested_list",
    "event_attribute",
)


def make(config: dict | None = None, telemetry: Telemetry | None = None) -> RedactProcessor:
    ctx = ComponentContext("redact", telemetry or Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    return RedactProcessor("redact", RedactConfig.model_validate(config or {}), ctx)


def plant(where: str, c: Canary, i: int) -> Span:
    attrs: dict[str, Any] = {"gen_ai.request.model": "gpt-4o"}
    s = Span(f"{i:032x}", f"{i:016x}", "chat gpt-4o", 0, 1, attributes=attrs, resource=Resource({"service.name": "a"}))
    if where == "span_name":
        s.name = c.phrase
    elif where == "event_name":
        s.events.append(Event(1, c.phrase, {}))
    elif where == "attribute_key":
        attrs[c.phrase] = "value"
    elif where == "nested_key":
        attrs["gen_ai.tool.args"] = {"args": {c.phrase: 1}}
    elif where == "scope_name":
        s.scope_name = c.phrase
    elif where == "scope_version":
        s.scope_version = c.phrase
    elif where == "trace_state":
        s.trace_state = "vendor=" + c.phrase
    elif where == "status_message":
        s.status_code, s.status_message = 2, c.text
    elif where == "link_attribute":
        s.links.append(Link("1" * 32, "1" * 16, "", {"note": c.text}))
    elif where == "link_trace_state":
        s.links.append(Link("1" * 32, "1" * 16, "vendor=" + c.phrase, {}))
    elif where == "resource_attribute":
        s.resource.attributes["deployment.notes"] = c.text
    elif where == "bytes_value":
        attrs["payload"] = c.text.encode()
    elif where == "bytes_not_utf8":
        attrs["payload"] = b"\xff\xfe" + c.phrase.encode() + b"\x80"
    elif where == "nested_list":
        attrs["gen_ai.input.messages"] = [{"role": "user", "parts": [{"type": "text", "content": c.text}]}]
    elif where == "event_attribute":
        s.events.append(Event(1, "gen_ai.user.message", {"content": c.text}))
    else:
        raise AssertionError(where)
    return s


def dump(s: Span) -> str:
    """Every text a span carries, bytes decoded, as one string."""

    def text(v: Any) -> str:
        if isinstance(v, bytes):
            return v.decode("latin-1")
        return json.dumps(v, default=lambda b: b.decode("latin-1"), ensure_ascii=False)

    parts = [s.name, s.scope_name, s.scope_version, s.trace_state, s.status_message, text(s.attributes),
             text(s.resource.attributes)]
    for e in s.events:
        parts += [e.name, text(e.attributes)]
    for link in s.links:
        parts += [link.trace_state, text(link.attributes)]
    return "\n".join(parts)


def survives(c: Canary, out: str) -> bool:
    """The secret is still readable in `out`: plainly, JSON-escaped, or after undoing disguises."""
    forms = {c.secret, json.dumps(c.secret)[1:-1]}
    view = unveil(out)
    texts = [out] if view is None else [out, view.text]
    texts += [t for t in map(b64_text, out.split()) if t is not None]
    return any(f in t for f in forms for t in texts)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_canary_is_caught_in_every_location(engine: str) -> None:
    telemetry = Telemetry()
    proc = make({"engine": engine}, telemetry)
    corpus = canaries(seed=21, per_type=1)
    spans = [plant(where, c, i * 100 + j) for i, c in enumerate(corpus) for j, where in enumerate(LOCATIONS)]
    proc.process(SpanBatch(spans, "locations"))
    missed = [
        (where, c.type)
        for i, c in enumerate(corpus)
        for j, where in enumerate(LOCATIONS)
        if survives(c, dump(spans[i * len(LOCATIONS) + j]))
    ]
    assert missed == [], f"secrets survived: {missed}"
    assert all("[REDACTED:" in dump(s) for s in spans)
    assert sum(counted(telemetry).values()) >= len(spans)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_canary_is_caught_under_every_disguise(engine: str) -> None:
    proc = make({"engine": engine})
    corpus = disguised_canaries(seed=22, per_type=2)
    assert {c.disguise for c in corpus} == set(DISGUISES)
    spans = [Span(f"{i:032x}", f"{i:016x}", "chat", 0, 1, attributes={"gen_ai.prompt": c.text})
             for i, c in enumerate(corpus)]
    proc.process(SpanBatch(spans, "disguised"))
    missed = [(c.disguise, c.type) for c, s in zip(corpus, spans, strict=True) if survives(c, dump(s))]
    assert missed == [], f"disguised secrets survived: {missed}"
    for c, s in zip(corpus, spans, strict=True):
        assert "[REDACTED:" in s.attributes["gen_ai.prompt"], (c.disguise, c.type)


def test_disguised_secret_in_a_key_and_a_name_is_masked() -> None:
    key = "sk-proj-" + "Ab3dEf9hIjK2mNoP4qRsT6uVwX8yZ0aB1cD"
    zw = key[:6] + "\u200b" + key[6:]
    s = Span("a" * 32, "b" * 16, f"call {zw}", 0, 1, attributes={zw: "x", "note": "\\u0073" + key[1:]})
    make().process(SpanBatch([s], "b"))
    assert s.name.startswith("call [REDACTED:openai_key:")
    assert list(s.attributes) == ["note", next(k for k in s.attributes if k.startswith("[REDACTED:openai_key:"))]
    # The marker's hash is the secret's, disguised or not: the same key correlates.
    assert s.attributes["note"] == s.name.removeprefix("call ")


def test_format_character_does_not_dodge_deny_keys() -> None:
    s = Span("a" * 32, "b" * 16, "n", 0, 1, attributes={"http.request.header.author\u200bization": "Basic eDp5"})
    make().process(SpanBatch([s], "b"))
    assert s.attributes == {}


def test_card_number_is_found_wherever_it_starts() -> None:
    rng = random.Random(3)
    proc = make()
    for _ in range(50):
        card, text = card_after_number(rng)
        (out,) = proc.redact_values([text])
        assert card not in out and "[REDACTED:credit_card:" in out, text
    two = "4111 1111 1111 1111 5555 5555 5555 4444"
    assert proc.scan_text(two) == [(0, 19, "credit_card"), (20, 39, "credit_card")]
    assert proc.scan_text("qty 4 3318 9758 9763") == []  # Luhn-valid 13 digits, but not written like a card
    assert proc.scan_text("layer sha256:a4277260423894482a586fe48bf") == []


def test_base64_of_a_whole_value_is_decoded_and_masked_whole() -> None:
    key = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    value = base64.b64encode(f"token={key}".encode()).decode()
    clean = base64.b64encode(b"just some configuration text, nothing secret").decode()
    s = Span("a" * 32, "b" * 16, "n", 0, 1, attributes={"blob": value, "other": clean})
    make().process(SpanBatch([s], "b"))
    assert s.attributes["blob"].startswith("[REDACTED:github_token:") and s.attributes["other"] == clean


def test_drop_action_removes_a_secret_key_and_empties_a_secret_name() -> None:
    key = "AKIA" + "QWERTYUIOPASDFGH"
    s = Span("a" * 32, "b" * 16, key, 0, 1, attributes={key: 1, "k": "v"}, scope_name=key)
    make({"actions": {"secret": "drop"}}).process(SpanBatch([s], "b"))
    assert s.attributes == {"k": "v"} and s.name == "" and s.scope_name == ""


def test_redact_values_and_redact_attributes_for_log_records() -> None:
    telemetry = Telemetry()
    proc = make({"deny_keys": ["*.password"]}, telemetry)
    key = "sk-ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe" * 3
    body = {"messages": [{"content": f"my key {key}"}], key: "k"}
    values = [f"log line {key}", body, f"bytes {key}".encode(), 42, None, "short"]
    out = proc.redact_values(values)
    assert len(out) == len(values) and values[1] is body and key in json.dumps(body)  # inputs untouched
    assert key not in json.dumps(out[:2]) and key.encode() not in out[2]
    assert isinstance(out[2], bytes) and out[3:] == [42, None, "short"]
    attrs = proc.redact_attributes({"db.password": "hunter2", "event.name": "gen_ai.user.message", "q": key})
    assert attrs == {"event.name": "gen_ai.user.message", "q": attrs["q"]} and attrs["q"].startswith("[REDACTED:")
    assert counted(telemetry)["anthropic_key"] == 5  # line, message, dict key, bytes, attribute
    dropped = make({"actions": {"secret": "drop"}}).redact_values([f"key {key}", "fine text"])
    assert dropped == [None, "fine text"]


def test_shipped_default_chain_redacts_before_normalize_copies_a_model_name() -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    order = raw["service"]["pipelines"]["traces"]["processors"]
    assert order[0] == "redact" and raw["processors"]["redact"]["categories"] == ["secret"]
    for name in ("distributed.yaml", "embedded.yaml", "full.yaml", "budgets.example.yaml"):
        pipelines = yaml.safe_load((ROOT / "config" / name).read_text())["service"]["pipelines"]
        first = next(p for p in pipelines.values() if "from" not in p)
        assert first["processors"][0] == "redact", name
    # The case found by hand: the secret stood in `model`; normalize copies it onto
    # gen_ai.request.model, which the redact config trusts (allow_keys). Redact runs first.
    key = "sk-proj-" + "Ab3dEf9hIjK2mNoP4qRsT6uVwX8yZ0aB1cD"
    ctx = ComponentContext("x", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    chain = []
    for pid, cfg in (("redact", {"allow_keys": ["gen_ai.request.model"]}), ("normalize", {})):
        f = PROCESSOR_FACTORIES[pid]
        chain.append(f.create(pid, f.config_model.model_validate(cfg), ctx))
    s = Span("a" * 32, "b" * 16, "chat", 0, 1, attributes={"model": key, "gen_ai.system": "openai"})
    batch = SpanBatch([s], "b")
    for p in chain:
        batch = p.process(batch)
    assert key not in json.dumps(s.attributes)
    assert s.attributes["gen_ai.request.model"].startswith("[REDACTED:openai_key:")


def test_clean_corpus_false_positive_rate_over_four_seeds() -> None:
    proc = make()
    for seed in (7, 11, 12, 13):
        values = clean_values(seed=seed, n=20_000)
        out = proc.redact_values(values)
        changed = [(a[:80], b[:80]) for a, b in zip(values, out, strict=True) if a != b]
        assert len(changed) / len(values) <= FP_BOUND, (seed, changed[:5])
