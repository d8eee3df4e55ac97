"""Replay results as traces: one span per replayed call, service `replay/NAME`, sent as OTLP/HTTP
protobuf to the pipeline's own receiver with the CLI's token, so they pass the chain (redact,
normalize, cost, ...) and the sinks like any other trace and show in `traces list/show` and the UI.

Each span is a GenAI client span (`chat MODEL`) with the request and response model, token counts,
`gen_ai.input.messages` / `gen_ai.output.messages` (semconv JSON), a link to the original call's
span, and `tracepipe.replay.{set,run_id,item,original_trace_id,original_span_id}`. A failed call is
a span with status Error and `error.type`.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from pipeline.config import Config, parse_endpoint
from pipeline.otlp.encode import encode_spans
from pipeline.semconv import (
    GEN_AI_CACHE_READ_TOKENS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_INPUT_TOKENS,
    GEN_AI_OPERATION,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_OUTPUT_TOKENS,
    GEN_AI_PROVIDER,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    SERVICE_NAME,
)
from pipeline.spans import STATUS_ERROR, STATUS_OK, Link, Resource, Span

REPLAY_SET = "tracepipe.replay.set"
REPLAY_RUN_ID = "tracepipe.replay.run_id"
REPLAY_ITEM = "tracepipe.replay.item"
REPLAY_ORIGINAL_TRACE = "tracepipe.replay.original_trace_id"
REPLAY_ORIGINAL_SPAN = "tracepipe.replay.original_span_id"
SPAN_KIND_CLIENT = 3
MAX_SPANS_PER_REQUEST = 500


def _semconv_messages(messages: list[dict[str, str]]) -> str:
    return json.dumps([{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages])


def result_span(name: str, run_id: str, item: dict[str, Any], result: dict[str, Any], resource: Resource,
                provider: str | None = None) -> Span:
    """The span of one replayed call; sets result["trace_id"] / ["span_id"]."""
    tid, sid = secrets.token_hex(16), secrets.token_hex(8)
    result["trace_id"], result["span_id"] = tid, sid
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION: "chat",
        GEN_AI_REQUEST_MODEL: result["model"],
        GEN_AI_INPUT_MESSAGES: _semconv_messages(result["messages"]),
        REPLAY_SET: name,
        REPLAY_RUN_ID: run_id,
        REPLAY_ITEM: int(item["item"]),
        REPLAY_ORIGINAL_TRACE: item["trace_id"],
        REPLAY_ORIGINAL_SPAN: item["span_id"],
    }
    if provider:
        attrs[GEN_AI_PROVIDER] = provider
    status, message = STATUS_OK, ""
    if result.get("error"):
        status, message = STATUS_ERROR, str(result["error"])[:300]
        attrs["error.type"] = message.split(":", 1)[0]
    else:
        if result.get("response_model"):
            attrs[GEN_AI_RESPONSE_MODEL] = result["response_model"]
        attrs[GEN_AI_INPUT_TOKENS] = int(result["input_tokens"])
        attrs[GEN_AI_OUTPUT_TOKENS] = int(result["output_tokens"])
        if result.get("cache_read_tokens"):
            attrs[GEN_AI_CACHE_READ_TOKENS] = int(result["cache_read_tokens"])
        attrs[GEN_AI_OUTPUT_MESSAGES] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": result["output"] or ""}]}]
        )
    start = int(result["start_ns"])
    return Span(tid, sid, f"chat {result['model']}", start, start + int(result["duration_ns"]),
                kind=SPAN_KIND_CLIENT, attributes=attrs, resource=resource, status_code=status,
                status_message=message, links=[Link(item["trace_id"], item["span_id"])],
                scope_name="tracepipe.replay")


def replay_resource(name: str) -> Resource:
    return Resource({SERVICE_NAME: f"replay/{name}"})


def otlp_http_url(cfg: Config, otlp_url: str | None = None) -> str:
    """Where the config's OTLP/HTTP receiver listens (`--otlp-url` wins): `.../v1/traces`."""
    if otlp_url is not None:
        base = otlp_url.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"
    for spec in cfg.receivers.values():
        http = getattr(spec.config, "http", None)
        if spec.type == "otlp" and http is not None and http.endpoint:
            host, port = parse_endpoint(http.endpoint)
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1"
            scheme = "https" if http.tls is not None else "http"
            return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}/v1/traces"
    raise ValueError("this config has no OTLP/HTTP receiver to record replay traces through (pass --otlp-url)")


def send_spans(url: str, spans: list[Span], token: str | None, *, attempts: int = 5,
               timeout: float = 30.0) -> None:
    """POST the spans (OTLP protobuf) in requests of at most MAX_SPANS_PER_REQUEST; a 429/503 is retried
    after its Retry-After. RuntimeError when the receiver refuses or cannot be reached."""
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for i in range(0, len(spans), MAX_SPANS_PER_REQUEST):
        body = encode_spans(spans[i : i + MAX_SPANS_PER_REQUEST]).SerializeToString()
        for attempt in range(attempts):
            req = urllib.request.Request(url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    resp.read()
                break
            except urllib.error.HTTPError as e:
                if e.code in (429, 503) and attempt + 1 < attempts:
                    time.sleep(min(10.0, float(e.headers.get("Retry-After") or 1)))
                    continue
                raise RuntimeError(f"the OTLP receiver at {url} refused the replay spans: HTTP {e.code}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                raise RuntimeError(f"nothing answers at {url}: {getattr(e, 'reason', e)}") from None
