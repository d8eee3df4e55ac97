"""A small fake OpenAI HTTP API (aiohttp) for instrumentation tests: chat completions (plain and
streamed, with a usage block including cached prompt tokens) and embeddings; optionally slow, or
answering given error statuses to its first chat requests (retry tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from tests.services import free_port

CHAT_RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
CHAT_USAGE = {"prompt_tokens": 1200, "completion_tokens": 80, "cached_tokens": 1024}
STREAM_USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "cached_tokens": 0}
EMBED_USAGE = {"prompt_tokens": 2}
# The non-streamed chat answer: a function of the request body (FakeOpenAI(answer=...)).
ANSWER: web.AppKey[Callable[[dict[str, Any]], str]] = web.AppKey("answer")


def _usage(u: dict[str, int]) -> dict[str, object]:
    return {
        "prompt_tokens": u["prompt_tokens"],
        "completion_tokens": u["completion_tokens"],
        "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": u["cached_tokens"], "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


# Faults and load of the chat endpoint (FakeOpenAI(errors=..., delay=...)): statuses answered to the
# first requests, in order, and what was seen (requests, peak concurrency).
FAULTS: web.AppKey[dict[str, Any]] = web.AppKey("faults")


async def chat(request: web.Request) -> web.StreamResponse:
    faults = request.app[FAULTS]
    faults["requests"] += 1
    faults["in_flight"] += 1
    faults["peak"] = max(faults["peak"], faults["in_flight"])
    try:
        if faults["delay"]:
            await asyncio.sleep(faults["delay"])
        if faults["errors"]:
            status = faults["errors"].pop(0)
            return web.json_response({"error": {"message": "injected", "code": status}}, status=status,
                                     headers={"Retry-After": "0"})
        return await _chat(request)
    finally:
        faults["in_flight"] -= 1


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    created = int(time.time())
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": created,
                "model": CHAT_RESPONSE_MODEL,
                "system_fingerprint": "fp_test",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": request.app[ANSWER](body)},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": _usage(CHAT_USAGE),
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)

    def chunk(delta: dict[str, object], finish: str | None, usage: dict[str, object] | None = None) -> bytes:
        doc = {
            "id": "chatcmpl-2",
            "object": "chat.completion.chunk",
            "created": created,
            "model": CHAT_RESPONSE_MODEL,
            "choices": [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": usage,
        }
        return f"data: {json.dumps(doc)}\n\n".encode()

    await resp.write(chunk({"role": "assistant", "content": ""}, None))
    for word in ("One", ", two", ", three."):
        await resp.write(chunk({"content": word}, None))
    await resp.write(chunk({}, "stop"))
    await resp.write(chunk({}, None, _usage(STREAM_USAGE)))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "model": body.get("model", "text-embedding-3-small"),
            "usage": {"prompt_tokens": EMBED_USAGE["prompt_tokens"], "total_tokens": EMBED_USAGE["prompt_tokens"]},
        }
    )


class FakeOpenAI:
    """Start with `await start()`, stop with `await stop()`; `base_url` has no /v1."""

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None, *, errors: list[int] | None = None,
                 delay: float = 0.0) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        app = web.Application()
        app[ANSWER] = answer or (lambda body: "Hello!")
        self.faults: dict[str, Any] = {"errors": list(errors or []), "delay": delay, "requests": 0, "in_flight": 0,
                                       "peak": 0}
        app[FAULTS] = self.faults
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/embeddings", embeddings)
        self._runner = web.AppRunner(app)

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()


@contextlib.contextmanager
def serving_in_thread(server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """Run `server` on its own event loop in a thread (tests that call it from synchronous code)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10), "the fake OpenAI server did not start"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
