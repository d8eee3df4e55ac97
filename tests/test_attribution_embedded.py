"""Attribution end to end in the embedded runtime, with real OTel SDK traffic: ids set only on
the root span (exported last) move the user's, customer+feature's and model's budgets by the
priced cost; the per-model totals agree in Prometheus, the API, `tracepipe cost` and `budgets
show`; a two-turn conversation reads back in order from `sessions show`."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pipeline.budgets.registry import build_budget_store
from pipeline.cli import main
from pipeline.config import build_config
from pipeline.embedded import EmbeddedRuntime
from tests.attribution_helpers import Turn, per_model_cost, scrape, send_trace, wait_until
from tests.services import free_port

T1 = Turn("u-42", "acme", "ask", "s-conv-1", "gpt-4o", "gpt-4o-2024-08-06", 1000, 200)
T2 = Turn("u-42", "acme", "ask", "s-conv-1", "gpt-4o", "gpt-4o-2024-08-06", 1500, 300)
T3 = Turn("u-7", "globex", "search", "s-conv-2", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 4000, 100)


def _raw_config(tmp_path: Path, redis_url: str, dsn: str, database: str) -> dict[str, Any]:
    return {
        "receivers": {"otlp": {"grpc": None, "http": {"endpoint": "127.0.0.1:0"}}},
        "processors": {"normalize": {}, "context": {"decision_wait": 30}, "cost": {}},
        "sinks": {
            "clickhouse": {"dsn": dsn, "database": database},
            "prometheus": {},
            "budgets": {
                "redis": {"url": redis_url},
                "key_prefix": f"attr{uuid.uuid4().hex[:8]}",
                "budgets": {
                    "user_daily": {"scope": "user", "period": "day"},
                    "customer_feature": {"scope": "customer+feature", "period": "month"},
                    "model_daily": {"scope": "model", "period": "day"},
                    "billed_model_daily": {"scope": "response_model", "period": "day"},
                },
            },
        },
        "service": {
            "data_dir": str(tmp_path / "data"),
            "api": {"endpoint": f"127.0.0.1:{free_port()}"},
            "metrics": {"endpoint": f"127.0.0.1:{free_port()}"},
            "batch": {"timeout": 0.05},
            "pipelines": {
                "traces": {"processors": ["normalize", "context", "cost"],
                           "sinks": ["clickhouse", "prometheus", "budgets"]},
            },
        },
    }


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
async def running(tmp_path: Path, redis_service, chdb_dsn: str, chdb_database: str):  # type: ignore[no-untyped-def]
    raw = _raw_config(tmp_path, redis_service.url, chdb_dsn, chdb_database)
    cfg = build_config(raw)
    cfg_path = tmp_path / "tracepipe.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    runtime = EmbeddedRuntime(cfg)
    endpoints = await runtime.start()
    registry = build_budget_store(cfg)
    assert registry is not None
    await registry.start()
    try:
        yield runtime, endpoints, registry, cfg_path
    finally:
        await registry.close()
        await runtime.stop()


def _context_processor(runtime: EmbeddedRuntime) -> Any:
    assert runtime.chain is not None
    [proc] = [p for p in runtime.chain.pipelines[0].processors if p.component_id == "context"]
    return proc


async def _spent(registry: Any, scope: str, id_: str) -> tuple[float, int]:
    [status] = await registry.status(scope, id_)
    return status.spent_usd, status.spans


async def test_ids_on_the_root_only_move_every_budget_and_the_four_views_agree(running) -> None:  # type: ignore[no-untyped-def]
    runtime, endpoints, registry, cfg_path = running
    proc = _context_processor(runtime)
    otlp = f"http://{endpoints.otlp_http}"
    api = f"http://{endpoints.api}"

    def children_held() -> None:  # the root is exported only once the pipeline holds its children
        wait_until(lambda: proc.held_spans == 2, 20, "the context processor to hold the two children")

    tid1 = await asyncio.to_thread(send_trace, otlp, T1, before_root=children_held)
    await asyncio.to_thread(wait_until, lambda: proc.held_spans == 0, 20, "the trace to be released")

    async def counted() -> bool:
        return (await _spent(registry, "user", "u-42"))[1] == 1

    for _ in range(400):
        if await counted():
            break
        await asyncio.sleep(0.05)
    assert await _spent(registry, "user", "u-42") == (pytest.approx(T1.cost, abs=1e-12), 1)
    assert await _spent(registry, "customer+feature", "acme/ask") == (pytest.approx(T1.cost, abs=1e-12), 1)
    assert await _spent(registry, "model", "gpt-4o") == (pytest.approx(T1.cost, abs=1e-12), 1)
    assert await _spent(registry, "response_model", "gpt-4o-2024-08-06") == (pytest.approx(T1.cost, abs=1e-12), 1)
    assert (await _spent(registry, "model", "gpt-4o-2024-08-06"))[1] == 0  # one model identity: the request model

    tid2 = await asyncio.to_thread(send_trace, otlp, T2, before_root=children_held)
    tid3 = await asyncio.to_thread(send_trace, otlp, T3)
    def stored() -> float:
        return runtime.telemetry.registry.get_sample_value("tracepipe_sink_sent_spans_total",
                                                           {"sink": "clickhouse"}) or 0.0

    for _ in range(600):
        if stored() >= 9:
            break
        await asyncio.sleep(0.05)
    assert stored() == 9

    # --- the typed columns carry the root's ids on the LLM span ---------------------------
    trace = await asyncio.to_thread(_get, f"{api}/api/traces/{tid1}")
    [llm] = [s for s in trace["spans"] if s["model"]]
    assert (llm["user_id"], llm["session_id"], llm["feature"]) == ("u-42", "s-conv-1", "ask")
    assert llm["model"] == "gpt-4o" and llm["response_model"] == "gpt-4o-2024-08-06"

    # --- one model identity: four views, same per-model totals ---------------------------
    expected = {"gpt-4o": T1.cost + T2.cost, "gpt-4o-mini": T3.cost}
    metrics = await asyncio.to_thread(_text, f"http://{endpoints.metrics}/metrics")
    prom = per_model_cost(metrics)
    api_rows = {r["group"]: r["cost_usd"] for r in await asyncio.to_thread(_get, f"{api}/api/analytics/cost?by=model")}
    cli_rows = {r["group"]: r["cost_usd"] for r in json.loads(await asyncio.to_thread(
        _cli, "cost", "--by", "model", "--json", "--api-url", api, "-c", str(cfg_path)))}
    budget_rows = {}
    for model in expected:
        out = json.loads(await asyncio.to_thread(_cli, "budgets", "show", "model", model, "--json", "-c",
                                                 str(cfg_path)))
        [row] = out["budgets"]
        budget_rows[model] = row["spent_usd"]
    for view in (prom, api_rows, cli_rows, budget_rows):
        assert view == {m: pytest.approx(v, abs=1e-9) for m, v in expected.items()}, view
    billed = {r["group"]: r["cost_usd"] for r in await asyncio.to_thread(
        _get, f"{api}/api/analytics/cost?by=response_model")}
    assert billed == {"gpt-4o-2024-08-06": pytest.approx(expected["gpt-4o"]),
                      "gpt-4o-mini-2024-07-18": pytest.approx(expected["gpt-4o-mini"])}
    assert scrape(metrics, "tracepipe_context_spans_without_root_total") == {'processor="context"': 0.0}

    # --- sessions and users ----------------------------------------------------------------
    session = await asyncio.to_thread(_get, f"{api}/api/sessions/s-conv-1")
    assert [t["trace_id"] for t in session["turns"]] == [tid1, tid2]
    assert [t["turn"] for t in session["turns"]] == [1, 2]
    assert [t["input_tokens"] for t in session["turns"]] == [1000, 1500]
    assert session["totals"]["cost_usd"] == pytest.approx(T1.cost + T2.cost)
    assert (session["totals"]["turns"], session["totals"]["llm_calls"], session["totals"]["errors"]) == (2, 2, 0)
    assert session["users"] == ["u-42"]
    text = await asyncio.to_thread(_cli, "sessions", "show", "s-conv-1", "--api-url", api, "-c", str(cfg_path))
    assert text.index(tid1) < text.index(tid2) and "2 turns" in text
    listing = await asyncio.to_thread(_get, f"{api}/api/sessions")
    assert {s["session_id"]: s["turns"] for s in listing["sessions"]} == {"s-conv-1": 2, "s-conv-2": 1}
    assert tid3 in await asyncio.to_thread(_cli, "traces", "list", "--session", "s-conv-2", "--api-url", api,
                                           "-c", str(cfg_path))
    by_session = {r["group"]: r["cost_usd"] for r in await asyncio.to_thread(
        _get, f"{api}/api/analytics/cost?by=session")}
    assert by_session == {"s-conv-1": pytest.approx(T1.cost + T2.cost), "s-conv-2": pytest.approx(T3.cost)}
    by_customer = {r["group"]: r["cost_usd"] for r in await asyncio.to_thread(
        _get, f"{api}/api/analytics/cost?by=customer")}
    assert by_customer == {"acme": pytest.approx(T1.cost + T2.cost), "globex": pytest.approx(T3.cost)}
    user = await asyncio.to_thread(_get, f"{api}/api/users/u-42")
    assert user["totals"]["traces"] == 2 and user["totals"]["cost_usd"] == pytest.approx(T1.cost + T2.cost)
    assert {t["trace_id"] for t in user["traces"]} == {tid1, tid2}
    assert "u-42" in await asyncio.to_thread(_cli, "users", "show", "u-42", "--api-url", api, "-c", str(cfg_path))
    # paging from the CLI: one trace per page, the cursor leads to the next
    first = json.loads(await asyncio.to_thread(_cli, "traces", "list", "--limit", "1", "--json", "--api-url", api,
                                               "-c", str(cfg_path)))
    second = json.loads(await asyncio.to_thread(_cli, "traces", "list", "--limit", "1", "--cursor", first["next"],
                                                "--json", "--api-url", api, "-c", str(cfg_path)))
    assert first["traces"][0]["trace_id"] != second["traces"][0]["trace_id"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        await asyncio.to_thread(_get, f"{api}/api/sessions/no-such-session")
    assert missing.value.code == 404


def test_cli_cost_dimensions_match_the_query_module() -> None:
    from pipeline.cli.query import COST_DIMENSIONS as CLI_DIMENSIONS
    from pipeline.query.traces import COST_DIMENSIONS

    assert CLI_DIMENSIONS == COST_DIMENSIONS


async def test_shutdown_releases_held_spans_to_every_sink(tmp_path: Path, redis_service, chdb_dsn: str,
                                                          chdb_database: str) -> None:
    raw = _raw_config(tmp_path, redis_service.url, chdb_dsn, chdb_database)
    cfg = build_config(raw)
    runtime = EmbeddedRuntime(cfg)
    endpoints = await runtime.start()
    proc = _context_processor(runtime)
    registry = build_budget_store(cfg)
    assert registry is not None
    await registry.start()
    try:
        lone = Turn("u-9", "acme", "ask", "s-9", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 500, 50)

        def stop_before_root() -> None:  # the root never comes: the children are held at shutdown
            wait_until(lambda: proc.held_spans == 2, 20, "the children to be held")
            raise _RootNeverSent

        with pytest.raises(_RootNeverSent):
            await asyncio.to_thread(send_trace, f"http://{endpoints.otlp_http}", lone, before_root=stop_before_root)
        assert (await _spent(registry, "model", "gpt-4o-mini"))[1] == 0
        await runtime.stop()
        assert await _spent(registry, "model", "gpt-4o-mini") == (pytest.approx(lone.cost, abs=1e-12), 1)
        assert (await _spent(registry, "user", "u-9"))[1] == 0  # the ids were on the root, which never came
        assert runtime.telemetry.registry.get_sample_value(
            "tracepipe_context_spans_without_root_total", {"processor": "context"}) == 2
        assert runtime.telemetry.registry.get_sample_value(
            "tracepipe_sink_sent_spans_total", {"sink": "clickhouse"}) == 2
    finally:
        await registry.close()
        await runtime.stop()


class _RootNeverSent(Exception):
    pass
