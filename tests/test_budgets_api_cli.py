"""GET /api/budgets/{scope}/{id} and `tracepipe budgets show` read the live counters."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import click
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from pipeline.api import ApiContext, build_app
from pipeline.budgets.registry import build_budget_store
from pipeline.cli.budgets import register
from pipeline.config import load_config
from pipeline.services import Services
from pipeline.telemetry import Telemetry
from sinks.budgets import BudgetsSink
from tests.budget_helpers import batch, context, llm_span
from tests.services import free_port

CONFIG = """
sinks:
  budgets:
    redis:
      url: {url}
    key_prefix: {prefix}
    budgets:
      user_daily:
        scope: user
        period: day
        tiers: {{free: {{usd: 0.10}}, pro: {{usd: 10}}}}
        limit: {{usd: 1.0}}
      user_monthly:
        scope: user
        period: month
        time_zone: Europe/Paris
        limit: {{usd: 20, tokens: 1000000}}
      tenant_feature:
        scope: tenant+feature
        period: hour
        limit: {{tokens: 5000}}
service:
  data_dir: {data_dir}
  api:
    endpoint: 127.0.0.1:{api_port}
  pipelines:
    accounting:
      processors: []
      sinks: [budgets]
"""


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "tracepipe.yaml"
    path.write_text(
        CONFIG.format(url=url, prefix=f"c{uuid.uuid4().hex[:8]}", data_dir=tmp_path / "data", api_port=free_port())
    )
    return path


async def _spend_and_close(tmp_path: Path, config_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    await _spend(tmp_path, config_path, registry)
    await registry.close()


async def _spend(tmp_path: Path, config_path: Path, registry) -> None:  # type: ignore[no-untyped-def]
    cfg = load_config(config_path)
    ctx = context(tmp_path)
    ctx.services.budgets = registry
    sink = BudgetsSink("budgets", cfg.sinks["budgets"].config, ctx)
    await sink.start()
    now = time.time()  # the API and the CLI read the current periods of the real clock
    await sink.write(
        batch(
            [
                llm_span(cost=0.04, tokens=(1000, 500), user="ann", tier="free", tenant="acme", feature="chat", end=now)
                for _ in range(3)
            ],
        )
    )
    await sink.close()


async def test_api_returns_spent_limit_remaining_and_reset_for_every_period(tmp_path: Path, redis_service) -> None:
    config_path = _config(tmp_path, redis_service.url)
    registry = build_budget_store(load_config(config_path))
    assert registry is not None
    await _spend(tmp_path, config_path, registry)
    app = build_app(ApiContext(telemetry=Telemetry(), services=Services(budgets=registry)))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/budgets/user/ann")
        assert resp.status == 200
        body = await resp.json()
        by_period = {b["period"]: b for b in body["budgets"]}
        assert set(by_period) == {"day", "month"}
        day, month = by_period["day"], by_period["month"]
        assert (day["spent_usd"], day["limit_usd"], day["remaining_usd"]) == (0.12, 0.1, 0.0)
        assert day["exceeded"] is True and day["tier"] == "free" and day["thresholds_crossed"] == [0.5, 0.8, 1.0]
        assert month["limit_usd"] == 20 and month["remaining_tokens"] == 1_000_000 - 4500
        assert month["reset_at"].endswith(("+01:00", "+02:00"))  # Paris calendar month
        assert day["reset_in_seconds"] > 0

        resp = await client.get("/api/budgets/feature+tenant/chat/acme")
        body = await resp.json()
        assert resp.status == 200 and body["scope"] == "feature+tenant"
        [tf] = body["budgets"]
        assert (tf["id"], tf["spent_tokens"], tf["limit_tokens"], tf["period"]) == ("acme/chat", 4500, 5000, "hour")

        resp = await client.get("/api/budgets/user/nobody", params={"tier": "pro"})
        body = await resp.json()
        assert {b["period"]: b["limit_usd"] for b in body["budgets"]} == {"day": 10.0, "month": 20.0}
        assert all(b["spent_usd"] == 0 for b in body["budgets"])

        assert (await client.get("/api/budgets/planet/earth")).status == 400
        assert (await client.get("/api/budgets/tenant+feature/acme")).status == 400
        assert (await client.get("/api/budgets/model/gpt-4o")).status == 404
        listing = await (await client.get("/api/budgets")).json()
        assert {b["name"] for b in listing["budgets"]} == {"user_daily", "user_monthly", "tenant_feature"}
    await registry.close()


async def test_api_answers_503_when_redis_is_down(tmp_path: Path) -> None:
    config_path = _config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    registry = build_budget_store(load_config(config_path))
    app = build_app(ApiContext(telemetry=Telemetry(), services=Services(budgets=registry)))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/budgets/user/ann")
        assert resp.status == 503
        assert "unavailable" in (await resp.json())["error"]
    await registry.close()  # type: ignore[union-attr]


def _cli() -> click.Group:
    @click.group()
    def main() -> None:
        pass

    register(main)
    return main


def test_cli_budgets_show_reads_redis(tmp_path: Path, redis_service) -> None:
    config_path = _config(tmp_path, redis_service.url)
    registry = build_budget_store(load_config(config_path))
    asyncio.run(_spend_and_close(tmp_path, config_path, registry))
    runner = CliRunner()
    result = runner.invoke(_cli(), ["budgets", "show", "user", "ann", "-c", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {b["period"]: b for b in json.loads(result.output)["budgets"]}
    assert rows["day"]["spent_usd"] == 0.12 and rows["day"]["exceeded"] is True
    result = runner.invoke(
        _cli(), ["budgets", "show", "tenant+feature", "acme/chat", "-c", str(config_path)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["BUDGET", "PERIOD", "SPENT", "LIMIT"]
    assert lines[1].split()[:2] == ["tenant_feature", "hour"] and "4500" in lines[1] and "90%" in lines[1]
    bad = runner.invoke(_cli(), ["budgets", "show", "planet", "earth", "-c", str(config_path)])
    assert bad.exit_code != 0 and "unknown scope" in bad.output


def test_cli_budgets_show_reads_the_local_snapshot_when_nothing_runs(tmp_path: Path) -> None:
    config_path = _config(tmp_path, "redis://unused")
    text = config_path.read_text().replace("    redis:\n      url: redis://unused\n", "")
    config_path.write_text(text)
    cfg = load_config(config_path)
    registry = build_budget_store(cfg)
    asyncio.run(_spend_and_close(tmp_path, config_path, registry))  # writes the snapshot
    assert (tmp_path / "data" / "budgets" / "budgets.json").exists()
    result = CliRunner().invoke(_cli(), ["budgets", "show", "user", "ann", "-c", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {b["period"]: b for b in json.loads(result.output)["budgets"]}
    assert rows["day"]["spent_usd"] == 0.12


async def test_guard_in_api_mode_enforces_the_embedded_local_store(tmp_path: Path) -> None:
    from pipeline.budgets.guard import BudgetGuard

    config_path = _config(tmp_path, "redis://unused")
    config_path.write_text(config_path.read_text().replace("    redis:\n      url: redis://unused\n", ""))
    registry = build_budget_store(load_config(config_path))
    app = build_app(ApiContext(telemetry=Telemetry(), services=Services(budgets=registry)))
    async with TestClient(TestServer(app)) as client:
        guard = BudgetGuard(api_url=str(client.make_url("")))
        assert (await guard.acheck(user="ann", tier="free")).allowed
        await _spend(tmp_path, config_path, registry)  # $0.12 of a $0.10 free-tier day
        refused = await guard.acheck(user="ann", tier="free", feature="chat", tenant="acme")
        assert not refused.allowed and refused.status_code == 429
        assert {b.budget for b in refused.blocked} == {"user_daily"}
        assert refused.retry_after is not None and refused.retry_after > 0
        nearly = await asyncio.to_thread(guard.check, tenant="acme", feature="chat", estimated_tokens=600)
        assert nearly.status_code == 429 and nearly.blocked[0].budget == "tenant_feature"  # 4500 + 600 > 5000
        resp = await client.get("/api/budgets/check", params={"user": "ann", "tier": "free"})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
        assert (await client.get("/api/budgets/check", params={"planet": "x"})).status == 400
    await registry.close()  # type: ignore[union-attr]
    down = BudgetGuard(api_url=f"http://127.0.0.1:{free_port()}", fail_open=False)
    assert (await down.acheck(user="ann")).status_code == 503
