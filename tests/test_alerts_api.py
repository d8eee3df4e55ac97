"""GET /api/alerts and `tracepipe alerts` against a real API server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from pipeline.alerts import AlertRouter, AlertStore
from pipeline.api import ApiContext, build_app
from pipeline.cli import main
from pipeline.services import Services
from pipeline.telemetry import Telemetry
from tests.services import free_port


def event(fp: str, state: str = "firing", rule: str = "cost_spike") -> dict[str, Any]:
    return {
        "type": "anomaly",
        "id": f"{fp}:{state}",
        "fingerprint": fp,
        "state": state,
        "rule": rule,
        "metric": "cost",
        "kind": "relative",
        "severity": "warning",
        "key": {"service": "chat", "model": "m"},
        "observed": 3.25,
        "baseline": {"mean": 1.0, "std": 0.1, "windows": 30},
        "threshold": 3.0,
        "window": {"start": "2026-01-01T00:20:00Z", "end": "2026-01-01T00:21:00Z"},
        "example_trace_ids": [],
    }


def filled_router() -> AlertRouter:
    router = AlertRouter(Telemetry(), store=AlertStore())
    router.publish("anomaly", event("a" * 16))
    router.publish("anomaly", event("b" * 16, rule="prompt_bloat"))
    router.publish("anomaly", event("a" * 16, state="resolved"))
    return router


async def client_for(services: dict[str, Any]) -> TestClient:
    client = TestClient(TestServer(build_app(ApiContext(telemetry=Telemetry(), services=Services(**services)))))
    await client.start_server()
    return client


async def test_api_lists_active_alerts_and_recent_events() -> None:
    client = await client_for({"alerts": filled_router().store})
    try:
        active = await (await client.get("/api/alerts")).json()
        assert active["state"] == "active" and active["active_count"] == 1
        assert [a["rule"] for a in active["alerts"]] == ["prompt_bloat"]
        every = await (await client.get("/api/alerts", params={"state": "all"})).json()
        assert [(a["rule"], a["state"]) for a in every["alerts"]] == [
            ("cost_spike", "resolved"),
            ("prompt_bloat", "firing"),
            ("cost_spike", "firing"),
        ]
        limited = await (await client.get("/api/alerts", params={"state": "all", "limit": "1"})).json()
        assert len(limited["alerts"]) == 1
        for params in ({"state": "open"}, {"limit": "x"}, {"limit": "0"}):
            resp = await client.get("/api/alerts", params=params)
            assert resp.status == 400 and "error" in await resp.json()
    finally:
        await client.close()


async def test_api_without_alert_path_answers_404() -> None:
    client = await client_for({})
    try:
        resp = await client.get("/api/alerts")
        assert resp.status == 404 and "not enabled" in (await resp.json())["error"]
    finally:
        await client.close()


async def test_cli_alerts_asks_the_running_pipeline() -> None:
    client = await client_for({"alerts": filled_router().store})
    url = str(client.make_url("")).rstrip("/")
    runner = CliRunner()
    try:
        wide = {"COLUMNS": "200"}  # rows fit the width: this one must not be cut
        table = await asyncio.to_thread(runner.invoke, main, ["alerts", "--api", url], env=wide)
        assert table.exit_code == 0, table.output
        lines = table.output.splitlines()
        assert lines[0].split()[:4] == ["STATE", "SEVERITY", "TYPE", "RULE"] and len(lines) == 2
        assert "prompt_bloat" in lines[1] and "service=chat,model=m" in lines[1] and "3.25" in lines[1]
        as_json = await asyncio.to_thread(runner.invoke, main, ["alerts", "--all", "--json", "--api", url])
        assert as_json.exit_code == 0
        assert len(json.loads(as_json.output)["alerts"]) == 3
    finally:
        await client.close()


def test_cli_alerts_says_clearly_when_nothing_answers() -> None:
    port = free_port()
    result = CliRunner().invoke(main, ["alerts", "--api", f"127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"no tracepipe pipeline answers at http://127.0.0.1:{port}" in result.output
