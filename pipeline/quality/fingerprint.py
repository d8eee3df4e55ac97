"""Prompt and response text of a GenAI span, normalised, and their fingerprints.

Where the text comes from, first match wins:
- OTel GenAI semconv: `gen_ai.input.messages` / `gen_ai.output.messages` (JSON lists of
  `{role, parts: [{type: text, content}]}`; plain `content` strings are accepted too);
- OpenLLMetry: `gen_ai.prompt.N.role/content` / `gen_ai.completion.N.content`;
- OpenInference: `input.value` / `output.value`.
Normalising lower-cases, collapses whitespace and keeps the role of each message, so the
same conversation sent with different spacing gets the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_WS = re.compile(r"\s+")
MAX_INDEXED = 64  # gen_ai.prompt.N: indices looked at


def normalise(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def _parts_text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if not isinstance(message, Mapping):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts")
    if isinstance(parts, list):
        return " ".join(
            p.get("content", "") for p in parts if isinstance(p, Mapping) and isinstance(p.get("content"), str)
        )
    return ""


def _messages(raw: Any) -> list[tuple[str, str]] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return [("", raw)]
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list):
        return None
    out = []
    for m in raw:
        role = m.get("role", "") if isinstance(m, Mapping) else ""
        out.append((str(role), _parts_text(m)))
    return out


def _indexed(attributes: Mapping[str, Any], prefix: str) -> list[tuple[str, str]] | None:
    out = []
    for i in range(MAX_INDEXED):
        content = attributes.get(f"{prefix}.{i}.content")
        if content is None:
            break
        out.append((str(attributes.get(f"{prefix}.{i}.role", "")), str(content)))
    return out or None


def prompt_messages(attributes: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    raw = attributes.get("gen_ai.input.messages")
    if raw is not None:
        return _messages(raw)
    found = _indexed(attributes, "gen_ai.prompt")
    if found:
        return found
    value = attributes.get("input.value")
    return None if value is None else [("", str(value))]


def response_text(attributes: Mapping[str, Any]) -> str | None:
    raw = attributes.get("gen_ai.output.messages")
    msgs = _messages(raw) if raw is not None else _indexed(attributes, "gen_ai.completion")
    if msgs is None:
        value = attributes.get("output.value")
        return None if value is None else str(value)
    text = "\n".join(t for _, t in msgs if t)
    return text or None


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def prompt_fingerprint(messages: Sequence[tuple[str, str]], keys: Sequence[str]) -> str:
    """Normalised messages, keyed by template/version values (`keys`) when the span has them."""
    body = "\x1e".join(f"{normalise(r)}\x1f{normalise(t)}" for r, t in messages)
    return digest("\x1d".join([*keys, body]))
