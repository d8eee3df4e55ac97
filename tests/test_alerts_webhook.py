"""The alert path: router, store, Prometheus gauges, and webhook delivery against a real local HTTP server."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.alerts import AlertRouter, AlertStore, WebhookConfig
from pipeline.alerts.webhook import WebhookNotifier
from pipeline.anomaly.config import AnomalyConfig
from pipeline.component import ComponentContext
from pipeline.spans import SpanBatch
from pipeline.telemetry import Telemetry
from processors.anomaly import AnomalyProcessor
from tests.anomaly_streams import NS, T0, KeyProfile, ManualClock, batches, context, window_spans

MIN = 60 * NS


class Hook:
    """A webhook endpoint that fails its first `fail_first` attempts, optionally holding one attempt open."""

    def __init__(self, fail_first: int = 0, status: int = 503, hold_attempt: int | None = None) -> None:
        self.fail_first = fail_first
        self.status = status
        self.hold_attempt = hold_attempt
        self.attempts: list[tuple[str | None, Any]] = []
        self.accepted: list[Any] = []
        self.held = asyncio.Event()  # set when the held attempt arrived
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts.append((request.headers.get("Idempotency-Key"), body))
        n = len(self.attempts)
        if n == self.hold_attempt:
            self.held.set()
            await self.release.wait()
        if n <= self.fail_first:
            return web.Response(status=self.status, text="try later")
        self.accepted.append(body)
        async with self.changed:
            self.changed.notify_all()
        return web.json_response({"ok": True})

    async def wait_accepted(self, n: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.accepted) >= n)


async def serve(hook: Hook) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def webhook(server: TestServer, **kw: Any) -> WebhookConfig:
    return WebhookConfig(url=str(server.make_url("/hook")), initial_backoff=0.01, max_backoff=0.05, **kw)


def sample(telemetry: Telemetry, name: str, labels: dict[str, str]) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


def event(state: str = "firing", severity: str = "warning", fp: str = "f" * 16, n: int = 0) -> dict[str, Any]:
    return {
        "type": "anomaly",
        "id": f"{fp}:{state}:{n}",
        "fingerprint": fp,
        "state": state,
        "rule": "cost_spike",
        "metric": "cost",
        "kind": "relative",
        "severity": severity,
        "key": {"service": "chat", "model": "m"},
        "observed": 3.5,
        "baseline": {"mean": 1.0, "std": 0.1, "windows": 30},
        "threshold": 3.0,
        "window": {"start": "a", "end": "b"},
        "example_trace_ids": ["ab" * 16],
        "summary": f"cost spike {n}",
    }


async def test_webhook_failing_first_attempts_delivers_once_while_spans_keep_flowing() -> None:
    hook = Hook(fail_first=3, hold_attempt=4)
    server = await serve(hook)
    telemetry = Telemetry()
    notifier = WebhookNotifier("webhook/0", webhook(server), telemetry, jitter=lambda: 0.0)
    router = AlertRouter(telemetry, notifiers=[notifier])
    await router.start()
    ctx: ComponentContext = context(telemetry=telemetry)
    ctx.emit_event = router.publish
    clock = ManualClock()
    proc = AnomalyProcessor(
        "anomaly",
        AnomalyConfig.model_validate(
            {
                "window": {"size": "1m"},
                "baseline": {"warmup_windows": 10},
                "rules": [{"name": "cost_spike", "metric": "cost", "kind": "relative", "threshold": 2.0}],
            }
        ),
        ctx,
        clock=clock,
    )
    rng = random.Random(21)
    profile = KeyProfile("chat", "gpt-4o")

    def run(windows: range) -> int:
        n = 0
        for w in windows:
            spans = window_spans(rng, profile, T0 + w * MIN, MIN, cost_factor=6.0 if 20 <= w <= 30 else 1.0)
            for b in batches(spans, 50):
                clock.now = b.spans[-1].end_ns / NS
                assert proc.process(b) is b
                n += len(b)
        return n

    try:
        run(range(25))  # the cost spike starts at window 20 and lasts to 30
        assert [a["state"] for a in router.store.active()] == ["firing"]  # the API sees it at once
        # three failures with backoff, then the 4th attempt is held open by the endpoint
        async with asyncio.timeout(10):
            await hook.held.wait()
        assert hook.accepted == [] and len(hook.attempts) == 4
        # while delivery is pending, the span path runs on without waiting: 15 more windows
        flowed = run(range(25, 40))
        proc.process(SpanBatch([], "tick"))
        assert flowed > 500
        assert hook.accepted == []
        assert router.store.active() == []  # resolved meanwhile, queued behind the firing event
        hook.release.set()
        await hook.wait_accepted(2)
        assert await router.flush(5)
    finally:
        await router.close()
        await server.close()
    assert [b["state"] for b in hook.accepted] == ["firing", "resolved"]  # each delivered exactly once
    keys = [k for k, _ in hook.attempts]
    assert len(keys) == 5 and len(set(keys[:4])) == 1 and keys[4] != keys[0]  # retries carry one idempotency key
    assert notifier.delivered == 2 and notifier.failed == 0
    assert sample(telemetry, "tracepipe_alert_notifications_total", {"notifier": "webhook/0", "outcome": "retry"}) == 3
    assert (
        sample(telemetry, "tracepipe_alerts_total", {"rule": "cost_spike", "severity": "warning", "state": "firing"})
        == 1
    )


async def test_slack_format_has_text_and_blocks() -> None:
    hook = Hook()
    server = await serve(hook)
    notifier = WebhookNotifier("slack", webhook(server, format="slack"), Telemetry())
    await notifier.start()
    try:
        notifier.notify(event())
        await hook.wait_accepted(1)
    finally:
        await notifier.close()
        await server.close()
    body = hook.accepted[0]
    assert "cost_spike firing" in body["text"] and "cost spike 0" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    assert any(b["type"] == "context" and "abab" in b["elements"][0]["text"] for b in body["blocks"])
    fields = next(b for b in body["blocks"] if "fields" in b)["fields"]
    assert any("service=chat" in f["text"] for f in fields)


async def test_attempt_timeout_is_retried_and_delivered_once() -> None:
    hook = Hook(hold_attempt=1)  # the first attempt never answers
    server = await serve(hook)
    telemetry = Telemetry()
    notifier = WebhookNotifier("w", webhook(server, timeout=0.2), telemetry, jitter=lambda: 0.0)
    await notifier.start()
    try:
        notifier.notify(event())
        await hook.wait_accepted(1)
        assert await notifier.flush(5)
    finally:
        hook.release.set()
        await notifier.close()
        await server.close()
    assert len(hook.accepted) == 1
    assert sample(telemetry, "tracepipe_alert_notifications_total", {"notifier": "w", "outcome": "retry"}) == 1


async def test_client_error_is_not_retried() -> None:
    hook = Hook(fail_first=10, status=400)
    server = await serve(hook)
    telemetry = Telemetry()
    notifier = WebhookNotifier("w", webhook(server), telemetry)
    await notifier.start()
    try:
        notifier.notify(event())
        assert await notifier.flush(5)
    finally:
        await notifier.close()
        await server.close()
    assert len(hook.attempts) == 1 and notifier.failed == 1
    assert sample(telemetry, "tracepipe_alert_notifications_total", {"notifier": "w", "outcome": "rejected"}) == 1


async def test_gives_up_after_max_retries() -> None:
    hook = Hook(fail_first=100)
    server = await serve(hook)
    notifier = WebhookNotifier("w", webhook(server, max_retries=2), Telemetry(), jitter=lambda: 0.0)
    await notifier.start()
    try:
        notifier.notify(event())
        assert await notifier.flush(5)
    finally:
        await notifier.close()
        await server.close()
    assert len(hook.attempts) == 3 and notifier.failed == 1 and hook.accepted == []


async def test_full_notifier_queue_drops_oldest_and_counts_it() -> None:
    hook = Hook()
    server = await serve(hook)
    telemetry = Telemetry()
    notifier = WebhookNotifier("w", webhook(server, queue_size=2), telemetry)
    for i in range(3):
        notifier.notify(event(n=i))  # not started: nothing is sent yet, notify never blocks
    assert notifier.pending == 2
    assert sample(telemetry, "tracepipe_alert_events_dropped_total", {"stage": "w"}) == 1
    await notifier.start()
    try:
        await hook.wait_accepted(2)
    finally:
        await notifier.close()
        await server.close()
    assert [b["summary"] for b in hook.accepted] == ["cost spike 1", "cost spike 2"]


async def test_min_severity_filters_events() -> None:
    hook = Hook()
    server = await serve(hook)
    notifier = WebhookNotifier("w", webhook(server, min_severity="critical"), Telemetry())
    await notifier.start()
    try:
        notifier.notify(event(severity="warning", n=1))
        notifier.notify(event(severity="critical", n=2))
        await hook.wait_accepted(1)
        assert await notifier.flush(5)
    finally:
        await notifier.close()
        await server.close()
    assert [b["summary"] for b in hook.accepted] == ["cost spike 2"]


async def test_router_keeps_a_gauge_per_active_alert_and_feeds_publishers() -> None:
    telemetry = Telemetry()
    got: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def broken(kind: str, ev: dict[str, Any]) -> None:
        raise RuntimeError("kafka down")

    class Topic:
        async def publish(self, kind: str, ev: dict[str, Any]) -> None:
            got.append((kind, ev["state"]))
            if len(got) == 2:
                done.set()

    router = AlertRouter(telemetry, store=AlertStore(history=10), publishers=[broken, Topic()])
    await router.start()
    labels = {"rule": "cost_spike", "severity": "warning", "alert": "a" * 16}
    try:
        router.publish("anomaly", event(fp="a" * 16))
        router.publish("anomaly", event(fp="b" * 16))
        assert sample(telemetry, "tracepipe_alerts_active", labels) == 1
        assert len(router.store) == 2
        router.publish("anomaly", event(state="resolved", fp="a" * 16))
        assert sample(telemetry, "tracepipe_alerts_active", labels) is None
        assert [e["fingerprint"] for e in router.store.active()] == ["b" * 16]
        assert [e["state"] for e in router.store.recent(10)] == ["resolved", "firing", "firing"]
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await router.close()
    assert got[:2] == [("anomaly", "firing"), ("anomaly", "firing")]  # the kind the processor emitted
    assert sample(telemetry, "tracepipe_alert_events_dropped_total", {"stage": "publisher"}) >= 2


@pytest.mark.parametrize("max_active", [2])
def test_store_caps_active_alerts(max_active: int) -> None:
    telemetry = Telemetry()
    router = AlertRouter(telemetry, store=AlertStore(max_active=max_active))
    for i in range(3):
        router.publish("anomaly", event(fp=f"{i:016x}"))
    assert [e["fingerprint"] for e in router.store.active()] == [f"{2:016x}", f"{1:016x}"]
    assert (
        sample(
            telemetry, "tracepipe_alerts_active", {"rule": "cost_spike", "severity": "warning", "alert": f"{0:016x}"}
        )
        is None
    )
