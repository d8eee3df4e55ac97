"""Prompt/response fingerprints across instrumentation dialects, and score validation."""

from __future__ import annotations

import json

import pytest

from pipeline.quality.fingerprint import prompt_fingerprint, prompt_messages, response_text
from pipeline.query.scores import validate_score

TID = "5b8efff798038103d269b633813fc60c"


def test_fingerprint_ignores_case_and_spacing_but_not_role_or_template_keys() -> None:
    a = prompt_messages({"gen_ai.input.messages": json.dumps([{"role": "user", "content": "What is  SSO?"}])})
    b = prompt_messages(
        {
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": " what is sso? "}]}]
            )
        }
    )
    c = prompt_messages({"gen_ai.input.messages": json.dumps([{"role": "system", "content": "What is SSO?"}])})
    assert a and b and c
    assert prompt_fingerprint(a, []) == prompt_fingerprint(b, [])
    assert prompt_fingerprint(a, []) != prompt_fingerprint(c, [])
    assert prompt_fingerprint(a, ["support-v1"]) != prompt_fingerprint(a, ["support-v2"])


def test_openllmetry_and_openinference_dialects_give_the_same_texts() -> None:
    semconv = {
        "gen_ai.input.messages": json.dumps([{"role": "user", "content": "Hi"}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]}]),
    }
    openllmetry = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "Hi",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Hello",
    }
    openinference = {"input.value": "Hi", "output.value": "Hello"}
    assert prompt_messages(semconv) == prompt_messages(openllmetry) == [("user", "Hi")]
    assert prompt_messages(openinference) == [("", "Hi")]
    assert response_text(semconv) == response_text(openllmetry) == response_text(openinference) == "Hello"
    assert response_text({"gen_ai.input.messages": "[]"}) is None


def test_score_values_numeric_boolean_and_categorical() -> None:
    assert validate_score({"trace_id": TID, "name": "x", "value": 3}).value == 3.0
    thumbs = validate_score({"trace_id": TID.upper(), "name": "thumbs", "value": True, "source": "user"})
    assert (thumbs.data_type, thumbs.value, thumbs.trace_id) == ("boolean", 1.0, TID)
    label = validate_score({"trace_id": TID, "name": "label", "value": "off-topic"})
    assert (label.data_type, label.value, label.string_value) == ("categorical", None, "off-topic")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"trace_id": TID, "name": "x", "value": 1, "tenant": "other"}, "tenant"),
        ({"trace_id": TID, "span_id": "12", "name": "x", "value": 1}, "span_id"),
        ({"trace_id": TID, "name": "has space", "value": 1}, "name"),
        ({"trace_id": TID, "name": "x", "value": None}, "value"),
        ({"trace_id": TID, "name": "x", "value": float("nan")}, "value"),
        ({"trace_id": TID, "name": "x", "value": 1, "comment": "c" * 4001}, "comment"),
        ({"trace_id": TID, "name": "x", "value": 1, "source": "robot"}, "source"),
        ([], "body"),
    ],
)
def test_bad_scores_are_refused_naming_the_field(body: object, field: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_score(body)
    assert str(info.value).startswith(field + ":")
