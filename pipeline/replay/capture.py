"""Capturing a replay set: which stored LLM calls match the filters, and what of each is kept.

A call is a span with a model (request or response) and input messages, read the way the quality
processor reads them (pipeline/quality/fingerprint.py: `gen_ai.input.messages`, the OpenLLMetry
`gen_ai.prompt.N.*`, OpenInference `input.value`), plus `gen_ai.system_instructions` as a leading
system message. Only text is kept (tool-call parts are not replayed). Spans of services `replay/*`
(earlier replays) are never captured unless `service` names one. Newest calls first, at most `limit`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.quality.fingerprint import prompt_messages, response_text
from pipeline.query.scores import SCORES_TABLE
from pipeline.query.traces import MODEL_EXPR, parse_since
from pipeline.semconv import GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
REPLAY_SERVICE_PREFIX = "replay/"
_FIELDS = {"name", "service", "model", "feature", "since", "from", "until", "score_below", "score_name", "limit"}
_TEXT_MAX = 512
# The attributes a capture reads (a map filter keeps the rest of SpanAttributes out of the result).
_KEYS = (GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS, "input.value", "output.value")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError("name: expected 1-64 characters of letters, digits, _ . - (starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class Filters:
    service: str | None = None
    model: str | None = None
    feature: str | None = None
    since: str | None = None
    from_: str | None = None  # ISO 8601 (naive: UTC)
    until: str | None = None
    score_below: float | None = None
    score_name: str | None = None
    limit: int = DEFAULT_LIMIT

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["from"] = d.pop("from_")
        return {k: v for k, v in d.items() if v is not None}


def _iso_ns(field: str, value: Any) -> int:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{field}: expected an ISO 8601 time such as 2026-01-31T12:00:00Z")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: expected an ISO 8601 time such as 2026-01-31T12:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)


def validate_create(body: Any) -> tuple[str, Filters]:
    """(name, filters) of a POST body; ValueError naming the bad field."""
    if not isinstance(body, dict):
        raise ValueError("body: expected a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0][:64]}: unknown field (expected {', '.join(sorted(_FIELDS))})")
    name = check_name(body.get("name"))
    text: dict[str, str | None] = {}
    for key in ("service", "model", "feature", "score_name"):
        v = body.get(key)
        if v is not None and (not isinstance(v, str) or not v or len(v) > _TEXT_MAX):
            raise ValueError(f"{key}: expected a string of 1-{_TEXT_MAX} characters")
        text[key] = v
    since = body.get("since")
    if since is not None:
        parse_since(since)
    for key in ("from", "until"):
        if body.get(key) is not None:
            _iso_ns(key, body[key])
    score_below = body.get("score_below")
    if score_below is not None:
        if isinstance(score_below, bool) or not isinstance(score_below, int | float) or score_below != score_below \
                or abs(score_below) > 1e12:
            raise ValueError("score_below: expected a finite number")
        score_below = float(score_below)
    if text["score_name"] is not None and score_below is None:
        raise ValueError("score_name: only with score_below")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: expected an integer between 1 and {MAX_LIMIT}")
    return name, Filters(text["service"], text["model"], text["feature"], since, body.get("from"),
                         body.get("until"), score_below, text["score_name"], limit)


def _capture_sql(queries: Any, f: Filters, tenant: str, now_ns: int) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"tenant": tenant, "limit": f.limit, "keys": list(_KEYS)}
    where = [
        "TenantId = {tenant:String}",
        "(RequestModel != '' OR ResponseModel != '')",
        "(mapContains(SpanAttributes, 'gen_ai.input.messages') OR"
        " mapContains(SpanAttributes, 'gen_ai.prompt.0.content') OR mapContains(SpanAttributes, 'input.value'))",
    ]
    if f.service is not None:
        params["service"] = f.service
        where.append("ServiceName = {service:String}")
    else:
        where.append(f"NOT startsWith(ServiceName, '{REPLAY_SERVICE_PREFIX}')")
    if f.model is not None:
        params["model"] = f.model
        where.append(f"({MODEL_EXPR} = {{model:String}} OR ResponseModel = {{model:String}})")
    if f.feature is not None:
        params["feature"] = f.feature
        where.append("Feature = {feature:String}")
    if f.since is not None:
        params["cutoff"] = now_ns - parse_since(f.since)
        where.append("Timestamp >= fromUnixTimestamp64Nano({cutoff:Int64})")
    if f.from_ is not None:
        params["from"] = _iso_ns("from", f.from_)
        where.append("Timestamp >= fromUnixTimestamp64Nano({from:Int64})")
    if f.until is not None:
        params["until"] = _iso_ns("until", f.until)
        where.append("Timestamp < fromUnixTimestamp64Nano({until:Int64})")
    if f.score_below is not None:
        params["below"] = f.score_below
        by_name = ""
        if f.score_name is not None:
            params["score_name"] = f.score_name
            by_name = " AND Name = {score_name:String}"
        where.append(
            f"TraceId IN (SELECT TraceId FROM `{queries.database}`.`{SCORES_TABLE}` WHERE TenantId = {{tenant:String}}"
            f" AND Value IS NOT NULL{by_name} GROUP BY TraceId HAVING avg(Value) < {{below:Float64}})"
        )
    sql = (
        "SELECT TraceId, SpanId, toUnixTimestamp64Nano(Timestamp), ServiceName, GenAiProvider, RequestModel,"
        " ResponseModel, Feature, InputTokens, OutputTokens, CacheReadTokens, CostUsd, Duration,"
        " mapFilter((k, v) -> has({keys:Array(String)}, k) OR startsWith(k, 'gen_ai.prompt.')"
        " OR startsWith(k, 'gen_ai.completion.'), SpanAttributes)"
        f" FROM {queries.spans_table} WHERE {' AND '.join(where)}"
        " ORDER BY Timestamp DESC, SpanId LIMIT 1 BY TraceId, SpanId LIMIT {limit:UInt32}"
    )
    return sql, params


def _system_messages(attributes: dict[str, Any]) -> list[dict[str, str]]:
    raw = attributes.get(GEN_AI_SYSTEM_INSTRUCTIONS)
    if raw is None:
        return []
    try:
        parts = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return [{"role": "system", "content": str(raw)}]
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list):
        return [{"role": "system", "content": str(parts)}]
    text = "\n".join(str(p.get("content", "")) if isinstance(p, dict) else str(p) for p in parts)
    return [{"role": "system", "content": text}] if text else []


def item_of(row: tuple[Any, ...]) -> dict[str, Any] | None:
    """The replay item of one span row (None when it has no text input)."""
    tid, sid, ts, svc, prov, req, resp, feat, in_tok, out_tok, cr_tok, cost, dur, attrs = row
    attrs = dict(attrs)
    msgs = prompt_messages(attrs) or []
    messages = _system_messages(attrs) + [{"role": role or "user", "content": text} for role, text in msgs if text]
    if not any(m["role"] != "system" for m in messages):
        return None
    return {
        "trace_id": tid, "span_id": sid, "timestamp_ns": int(ts), "service": svc, "provider": prov or None,
        "model": req or resp or None, "response_model": resp or None, "feature": feat or None,
        "input_messages": messages, "original_output": response_text(attrs) or "",
        "input_tokens": int(in_tok), "output_tokens": int(out_tok), "cache_read_tokens": int(cr_tok),
        "cost_usd": cost, "duration_ns": int(dur),
    }


async def capture(queries: Any, tenant: str, filters: Filters, now_ns: int) -> list[dict[str, Any]]:
    """The items the filters select from `tenant`'s stored spans, newest first."""
    sql, params = _capture_sql(queries, filters, tenant, now_ns)
    rows = await queries._query(sql, params)
    return [it for it in (item_of(r) for r in rows) if it is not None]
