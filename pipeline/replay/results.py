"""A run's results as the CLI posts them (POST /api/replay/sets/NAME/results): validated field by field.

Body: `run_id` (1-64 of letters, digits, _ -) and `results`, a list of at most 1000 objects with
`item` (an item id of the set), `model`, and optional `response_model`, `output`, `input_tokens`,
`output_tokens`, `cache_read_tokens`, `cost_usd`, `duration_ns`, `attempts`, `error`,
`exact_match`, `similarity` (0..1), `trace_id` / `span_id` (the replay span), `system_prompt`.
"""

from __future__ import annotations

import math
import re
from typing import Any

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_RESULTS = 1000
MAX_TEXT = 1_000_000
_HEX = {"trace_id": 32, "span_id": 16}  # lowercase hex characters
_INTS = ("input_tokens", "output_tokens", "cache_read_tokens", "duration_ns", "attempts")
_TEXTS = {"model": 512, "response_model": 512, "output": MAX_TEXT, "error": 1000, "system_prompt": MAX_TEXT}
_FIELDS = {"item", "exact_match", "similarity", "cost_usd", *_INTS, *_TEXTS, *_HEX}


def _result(i: int, r: Any, item_ids: set[int]) -> dict[str, Any]:
    at = f"results[{i}]"
    if not isinstance(r, dict):
        raise ValueError(f"{at}: expected an object")
    unknown = sorted(set(r) - _FIELDS)
    if unknown:
        raise ValueError(f"{at}.{unknown[0][:64]}: unknown field")
    item = r.get("item")
    if isinstance(item, bool) or not isinstance(item, int) or item not in item_ids:
        raise ValueError(f"{at}.item: not an item of this set")
    for key, limit in _TEXTS.items():
        v = r.get(key)
        if v is not None and (not isinstance(v, str) or len(v) > limit):
            raise ValueError(f"{at}.{key}: expected a string of at most {limit} characters")
    if not r.get("model"):
        raise ValueError(f"{at}.model: required")
    for key in _INTS:
        v = r.get(key)
        hi = 255 if key == "attempts" else 2**63 - 1
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi):
            raise ValueError(f"{at}.{key}: expected an integer between 0 and {hi}")
    for key, lo, hi in (("cost_usd", 0.0, 1e9), ("similarity", 0.0, 1.0)):
        v = r.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                              or not lo <= v <= hi):
            raise ValueError(f"{at}.{key}: expected a number between {lo:g} and {hi:g}")
    if r.get("exact_match") is not None and not isinstance(r["exact_match"], bool):
        raise ValueError(f"{at}.exact_match: expected a boolean")
    for key, n in _HEX.items():
        v = r.get(key)
        if v is not None and (not isinstance(v, str) or not re.fullmatch(f"[0-9a-f]{{{n}}}", v)):
            raise ValueError(f"{at}.{key}: expected {n} lowercase hex characters")
    return dict(r)


def validate_results(body: Any, item_ids: set[int]) -> tuple[str, list[dict[str, Any]]]:
    """(run_id, results); ValueError naming the bad field."""
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - {"run_id", "results"})
    if unknown:
        raise ValueError(f"{unknown[0][:64]}: unknown field (expected run_id, results)")
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise ValueError("run_id: expected 1-64 characters of letters, digits, _ -")
    results = body.get("results")
    if not isinstance(results, list) or not 1 <= len(results) <= MAX_RESULTS:
        raise ValueError(f"results: expected a list of 1-{MAX_RESULTS} results")
    return run_id, [_result(i, r, item_ids) for i, r in enumerate(results)]
