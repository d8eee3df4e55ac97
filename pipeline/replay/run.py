"""The replay runner: a set's items sent to an OpenAI-compatible chat completions endpoint.

`POST {endpoint}/chat/completions` (endpoint as an OpenAI SDK `base_url`, e.g.
`https://api.openai.com/v1`), non-streamed, at most `concurrency` requests in flight (a semaphore),
each with a `timeout`. A 408/409/429/5xx answer, a timeout or a connection error is retried up to
`retries` times with exponential backoff (`backoff` * 2^attempt, or the answer's Retry-After when
longer, capped at 30 s); any other 4xx is the item's error at once. An item that fails keeps its
error and never stops the others. The request carries the item's messages (system messages
replaced by the system prompt when one is given) and the replay model; nothing else of the
original request is known (temperature, tools), so nothing else is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class RunSettings:
    endpoint: str
    model: str
    api_key: str | None = None
    system_prompt: str | None = None
    concurrency: int = 4
    retries: int = 3
    timeout: float = 60.0
    backoff: float = 0.5
    max_tokens: int | None = None


def request_messages(item: dict[str, Any], system_prompt: str | None) -> list[dict[str, str]]:
    """The item's messages, with its system messages replaced by `system_prompt` when given."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in item["input_messages"]]
    if system_prompt is None:
        return msgs
    return [{"role": "system", "content": system_prompt}] + [m for m in msgs if m["role"] != "system"]


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _answer(doc: Any) -> tuple[str, str | None, dict[str, int]]:
    """(text, response model, usage) of a chat completion; ValueError when it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list) or not doc["choices"]:
        raise ValueError("the answer has no choices")
    message = doc["choices"][0].get("message") if isinstance(doc["choices"][0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    counts = {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_tokens": int(details.get("cached_tokens") or 0),
    }
    model = doc.get("model") if isinstance(doc.get("model"), str) else None
    return content if isinstance(content, str) else "", model, counts


async def _one(session: aiohttp.ClientSession, sem: asyncio.Semaphore, s: RunSettings, item: dict[str, Any],
               sleep: Callable[[float], Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": s.model, "messages": request_messages(item, s.system_prompt)}
    if s.max_tokens is not None:
        body["max_tokens"] = s.max_tokens
    headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
    url = s.endpoint.rstrip("/") + "/chat/completions"
    out: dict[str, Any] = {"item": item["item"], "model": s.model, "messages": body["messages"]}
    error = "not sent"
    for attempt in range(s.retries + 1):
        wait: float | None = None
        async with sem:
            start_ns = time.time_ns()
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=s.timeout)) as resp:
                    raw = await resp.read()
                    if resp.status == 200:
                        text, model, usage = _answer(await resp.json(content_type=None))
                        return out | usage | {
                            "output": text, "response_model": model, "start_ns": start_ns,
                            "duration_ns": int((time.perf_counter() - t0) * 1e9), "attempts": attempt + 1,
                            "error": None,
                        }
                    error = f"HTTP {resp.status}: {raw[:200].decode('utf-8', 'replace')}"
                    if resp.status not in RETRY_STATUSES:
                        break
                    wait = _retry_after(resp.headers)
            except (TimeoutError, aiohttp.ClientError) as e:
                error = f"{type(e).__name__}: {e}"[:300]
            except ValueError as e:
                error = f"not a chat completion: {e}"
                break
        if attempt < s.retries:
            await sleep(min(MAX_BACKOFF, max(wait or 0.0, s.backoff * 2**attempt)))
    return out | {"output": None, "response_model": None, "start_ns": time.time_ns(), "duration_ns": 0,
                  "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "attempts": attempt + 1,
                  "error": error}


async def run_items(items: list[dict[str, Any]], settings: RunSettings,
                    on_done: Callable[[dict[str, Any]], None] | None = None,
                    sleep: Callable[[float], Any] = asyncio.sleep) -> list[dict[str, Any]]:
    """One result per item, in item order: output, response model, tokens, start, duration, attempts, error."""
    sem = asyncio.Semaphore(max(1, settings.concurrency))
    async with aiohttp.ClientSession() as session:

        async def go(item: dict[str, Any]) -> dict[str, Any]:
            r = await _one(session, sem, settings, item, sleep)
            if on_done is not None:
                on_done(r)
            return r

        return list(await asyncio.gather(*(go(it) for it in items)))
