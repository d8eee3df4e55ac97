"""The terminal view: money format, colour on/off, tables fitted to the width, the waterfall
offsets of `traces show`, every option documented, and alert history across a restart."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from pipeline.alerts import AlertRouter, AlertStore
from pipeline.api import ApiContext, build_app
from pipeline.cli import main
from pipeline.query.render import render_cost, render_trace, render_trace_list
from pipeline.query.term import Term, detect, ellipsize, fmt_usd, total_line
from pipeline.services import Services
from pipeline.telemetry import Telemetry
from sinks.budgets import BudgetsSink
from tests.budget_helpers import Clock, batch, context, llm_span, sink_config

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- money ---------------------------------------------------------------------------------


def test_money_has_three_significant_digits_below_a_dollar_and_cents_above() -> None:
    assert [fmt_usd(v) for v in (0, 1e-7, 0.0123456, 12.3, 12345.678, None)] == [
        "$0",
        "$0.0000001",
        "$0.0123",
        "$12.30",
        "$12,345.68",
        "-",
    ]
    tricky = (0.025, 0.99999, 1.5, -0.5, 2.5e-12)
    assert [fmt_usd(v) for v in tricky] == ["$0.025", "$1.00", "$1.50", "-$0.50", "$2.5e-12"]


def test_total_line_names_the_unpriced_calls_left_out() -> None:
    assert total_line(1.23, 3) == "total $1.23 (3 unpriced calls not included)"
    assert total_line(1.23, 1) == "total $1.23 (1 unpriced call not included)"
    assert total_line(1.23, 0) == "total $1.23"
    assert total_line(None, 2) == "total unpriced (2 unpriced calls)"


def _cost_rows() -> list[dict[str, Any]]:
    return [
        {"group": "gpt-4o-2024-08-06-with-a-long-deployment-name", "cost_usd": 1.2, "input_tokens": 1000,
         "output_tokens": 200, "calls": 4, "unpriced_calls": 0, "p50_ms": 100.0, "p95_ms": 300.0},
        {"group": "in-house-llm", "cost_usd": None, "input_tokens": 50, "output_tokens": 5, "calls": 3,
         "unpriced_calls": 3, "p50_ms": 1.0, "p95_ms": 2.0},
        {"group": "claude", "cost_usd": 0.03, "input_tokens": 10, "output_tokens": 5, "calls": 1,
         "unpriced_calls": 0, "p50_ms": 9.0, "p95_ms": 9.0},
    ]  # fmt: skip


def test_cost_table_total_says_how_many_unpriced_calls_it_leaves_out() -> None:
    text = render_cost(_cost_rows(), "model")
    assert text.splitlines()[-1] == "total $1.23 (3 unpriced calls not included)"
    total_row = text.splitlines()[-2].split()
    assert total_row[:2] == ["TOTAL", "$1.23"] and "3" in total_row


# --- width ---------------------------------------------------------------------------------


def test_ellipsis_at_the_end_or_in_the_middle() -> None:
    assert ellipsize("abcdefghij", 5) == "abcd…"
    assert ellipsize("abcdefghij", 5, "middle") == "ab…ij"
    assert ellipsize("abc", 5) == "abc"


def test_cost_table_fits_60_columns_and_never_cuts_numbers() -> None:
    text = render_cost(_cost_rows(), "model", Term(width=60))
    table_lines = text.splitlines()[:-1]
    assert all(len(line) <= 60 for line in table_lines), text
    assert "…" in table_lines[1]  # the long model name is ellipsised
    for money in ("$1.20", "$0.03", "$1.23"):
        assert money in text
    wide = render_cost(_cost_rows(), "model", Term(width=200))
    assert "gpt-4o-2024-08-06-with-a-long-deployment-name" in wide and "P95" in wide
    assert "P95" not in text.splitlines()[0]  # a column went at 60 rather than numbers being cut


def _trace_list() -> dict[str, Any]:
    return {
        "traces": [
            {"trace_id": f"{i:032x}", "start_ns": 1_700_000_000_000_000_000 + i,
             "root_name": "a-very-long-root-span-name",
             "root_service": "support-bot-backend", "duration_ns": 2.5e9, "spans": 5, "errors": i % 2,
             "input_tokens": 100, "output_tokens": 20, "llm_calls": 1, "cost_usd": None if i == 2 else 0.0125,
             "user_id": "user-with-a-long-identifier-42"}
            for i in range(1, 4)
        ],
        "next": None,
    }  # fmt: skip


@pytest.mark.parametrize("columns", [60, 200])
def test_trace_list_rows_fit_the_width_with_whole_trace_ids(columns: int) -> None:
    text = render_trace_list(_trace_list(), Term(width=columns))
    lines = text.splitlines()
    assert all(len(line) <= columns for line in lines[:-1]), text
    assert f"{1:032x}" in lines[1]  # the id you copy is never cut
    assert lines[-1] == "3 traces, total $0.025 (1 unpriced trace not included)"
    if columns == 200:
        assert "user-with-a-long-identifier-42" in lines[1] and "support-bot-backend" in lines[1]


# --- traces show: the waterfall ------------------------------------------------------------


def _trace() -> dict[str, Any]:
    embedding = {"name": "embedding", "start_ns": 1_000, "duration_ns": 200_000_000, "model": "text-embedding-3-small",
                 "input_tokens": 1000, "cost_usd": None}
    search = {"name": "vector_search", "start_ns": 200_001_000, "duration_ns": 1_600_000_000}
    retrieval = {"name": "retrieval", "start_ns": 1_000, "duration_ns": 1_800_000_000, "children": [embedding, search],
                 "subtree": {"cost_usd": None}}
    synthesis = {"name": "synthesis", "start_ns": 1_800_001_000, "duration_ns": 700_000_000, "model": "gpt-4o",
                 "input_tokens": 2000, "output_tokens": 500, "cost_usd": 0.0125, "status_code": "Error",
                 "status_message": "rate limited once"}
    root = {"name": "rag-pipeline", "start_ns": 0, "duration_ns": 2_500_001_000, "children": [retrieval, synthesis],
            "subtree": {"cost_usd": 0.0125}}
    return {"tree": [root], "totals": {"spans": 5, "errors": 1, "duration_ns": 2_500_001_000, "cost_usd": 0.0125,
                                       "input_tokens": 3000, "output_tokens": 500}}  # fmt: skip


def test_traces_show_has_a_start_offset_column_and_a_bar() -> None:
    lines = render_trace(_trace()).splitlines()
    assert lines[0].split() == ["OFFSET", "TIMELINE", "SPAN"]
    offsets = [line.split()[0] for line in lines[1:6]]
    assert offsets == ["+0", "+1µs", "+1µs", "+200ms", "+1.8s"]
    bars = [line.split()[1] for line in lines[1:6]]
    assert bars[0] == "█" * 20  # the root spans the whole trace
    assert bars[4].startswith("·" * 14) and bars[4].endswith("█")  # synthesis: the last 28%
    assert lines[5].endswith("└── synthesis (700ms, gpt-4o, 2000 in / 500 out, $0.0125) ✗ ERROR: rate limited once")
    assert lines[6] == "total: 5 spans, 1 error, 2.5s, 3000 in / 500 out tokens, $0.0125 (1 unpriced call not included)"


def test_traces_show_cuts_span_lines_but_not_offsets_at_60_columns() -> None:
    lines = render_trace(_trace(), Term(width=60)).splitlines()
    assert all(len(line) <= 60 for line in lines[:-1])
    assert lines[5].split()[0] == "+1.8s" and lines[5].endswith("…")


# --- colour --------------------------------------------------------------------------------


class _Tty:
    def isatty(self) -> bool:
        return True


def test_colour_follows_tty_no_color_and_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    assert detect(None, _Tty()) == Term(color=True, width=100)  # type: ignore[arg-type]
    assert detect(False, _Tty()).color is False  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert detect(None, _Tty()).color is False  # type: ignore[arg-type]
    assert detect(True, _Tty()).color is True  # type: ignore[arg-type]


# --- CLI: tracepipe alerts with budget and anomaly alerts -----------------------------------


def anomaly_event(fp: str) -> dict[str, Any]:
    return {
        "type": "anomaly", "fingerprint": fp, "state": "firing", "rule": "cost_spike", "metric": "cost",
        "kind": "relative", "severity": "warning", "key": {"service": "chat", "model": "m"}, "observed": 3.25,
        "baseline": {"mean": 1.0, "std": 0.1, "windows": 30}, "threshold": 3.0,
        "window": {"start": "2037-01-01T00:20:00Z", "end": "2037-01-01T00:21:00Z"}, "example_trace_ids": [],
    }  # fmt: skip


async def _budget_alerts_into(router: AlertRouter, tmp_path: Path) -> None:
    """A real budgets sink crossing alice's $0.10 (free tier) daily budget, its events through the router."""
    ctx = context(tmp_path, None)
    ctx.emit_event = router.emit
    sink = BudgetsSink("budgets", sink_config(None, thresholds=[0.5, 1.0]), ctx, clock=Clock())
    await sink.start()
    try:
        await sink.write(batch([llm_span(cost=0.06)]))
        await sink.write(batch([llm_span(cost=0.06)]))
    finally:
        await sink.close()


def test_budget_alerts_reach_the_store_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "alerts.jsonl"
    router = AlertRouter(Telemetry(), store=AlertStore(history=50, max_active=10, path=path))
    router.publish("anomaly", anomaly_event("a" * 16))
    asyncio.run(_budget_alerts_into(router, tmp_path))
    active = router.store.active()
    budget = [e for e in active if e.get("type") == "budget.threshold"]
    assert len(budget) == 1 and budget[0]["threshold"] == 1.0  # 100% replaced 50% for the same id and period
    assert len(router.store.recent(100)) == 3  # anomaly, 50%, 100%
    router.store.close()
    assert path.stat().st_mode & 0o077 == 0

    again = AlertStore(history=50, max_active=10, path=path)  # a restart
    assert [e.get("rule") for e in again.active()] == [e.get("rule") for e in active]
    assert [e.get("threshold") for e in again.recent(100)] == [1.0, 0.5, 3.0]
    # deletion reaches the file: forgetting alice's events rewrites it
    assert again.forget(lambda e: (e.get("key") or {}).get("user") == "alice") == 3
    again.close()
    reread = AlertStore(history=50, max_active=10, path=path)
    assert [e.get("rule") for e in reread.recent(100)] == ["cost_spike"]
    assert "alice" not in path.read_text()
    reread.close()


def test_alert_history_file_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    store = AlertStore(history=5, max_active=2, path=path)
    for i in range(100):
        store.apply({**anomaly_event(f"{i:016x}"), "state": "firing"})
    store.close()
    assert len(path.read_text().splitlines()) <= 2 * (5 + 2)
    again = AlertStore(history=5, max_active=2, path=path)
    assert len(again) == 2 and len(again.recent(100)) == 5
    again.close()


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    store = AlertStore(path=path)
    store.apply(anomaly_event("c" * 16))
    store.close()
    with path.open("a") as f:
        f.write('{"event": {"sta')
    again = AlertStore(path=path)
    assert again.skipped_lines == 1 and len(again) == 1
    again.close()


async def _serve(store: AlertStore) -> TestClient:
    client = TestClient(TestServer(build_app(ApiContext(telemetry=Telemetry(), services=Services(alerts=store)))))
    await client.start_server()
    return client


async def test_cli_alerts_lists_budget_and_anomaly_alerts_fitted_and_coloured(tmp_path: Path) -> None:
    router = AlertRouter(Telemetry(), store=AlertStore())
    router.publish("anomaly", anomaly_event("a" * 16))
    await _budget_alerts_into(router, tmp_path)
    client = await _serve(router.store)
    url = str(client.make_url("")).rstrip("/")
    try:
        def run(args: list[str], env: dict[str, str]) -> str:
            # color=True: the runner keeps escapes, so what tracepipe decided shows
            result = CliRunner().invoke(main, ["alerts", "--api", url, *args], env=env, color=True)
            assert result.exit_code == 0, result.output
            return result.output

        wide = await asyncio.to_thread(run, [], {"COLUMNS": "200", "NO_COLOR": ""})
        lines = wide.splitlines()
        assert lines[0].split()[:4] == ["STATE", "SEVERITY", "TYPE", "RULE"]
        budget_line = next(line for line in lines if "budget:user_daily" in line)
        assert budget_line.split()[:3] == ["firing", "critical", "budget"]
        assert "$0.12" in budget_line and "$0.10" in budget_line and "100%" in budget_line
        assert any("cost_spike" in line and "anomaly" in line for line in lines)
        assert "\x1b[" not in wide  # piped: no colour

        narrow = await asyncio.to_thread(run, [], {"COLUMNS": "60"})
        assert all(len(line) <= 60 for line in narrow.splitlines()), narrow
        assert "$0.12" in narrow  # numbers are not cut

        forced = await asyncio.to_thread(run, ["--color"], {"COLUMNS": "200"})
        assert "\x1b[" in forced and ANSI.sub("", forced) == wide
        no_color = await asyncio.to_thread(run, ["--no-color"], {"COLUMNS": "200"})
        assert no_color == wide
    finally:
        await client.close()


def test_cli_alerts_reads_the_saved_history_when_nothing_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = AlertStore(path=data / "alerts" / "alerts.jsonl")
    store.apply(anomaly_event("d" * 16))
    store.close()
    config = tmp_path / "c.yaml"
    text = (Path(__file__).parent.parent / "config" / "embedded.yaml").read_text()
    text = text.replace("    endpoint: 127.0.0.1:8081", "    endpoint: null")
    assert "endpoint: null" in text
    config.write_text(text)
    result = CliRunner().invoke(main, ["alerts", "-c", str(config), "--data-dir", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert [a["rule"] for a in json.loads(result.output)["alerts"]] == ["cost_spike"]


# --- help on every option ----------------------------------------------------------------------


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            out += _commands(sub, (*path, name))
    return out


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"tracepipe {' '.join(path)} {'/'.join(p.opts)}"
        for path, cmd in _commands(main)
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert missing == []
    assert len(_commands(main)) > 15


def test_every_command_answers_help() -> None:
    runner = CliRunner()
    for path, _cmd in _commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)


# --- end to end: the embedded runtime keeps its budget alerts across a restart --------------


async def test_embedded_runtime_budget_alert_survives_a_restart(tmp_path: Path) -> None:
    import time

    import aiohttp

    from pipeline.config import build_config
    from pipeline.embedded import EmbeddedRuntime
    from tests.test_budgets_embedded import _otlp_json

    raw = {
        "receivers": {"otlp": {"grpc": None, "http": {"endpoint": "127.0.0.1:0"}}},
        "processors": {"normalize": {}, "cost": {}},
        "sinks": {
            "budgets": {
                "local": {},
                "thresholds": [1.0],
                "budgets": {"user_daily": {"scope": "user", "period": "day", "limit": {"tokens": 2000}}},
            }
        },
        "service": {
            "data_dir": str(tmp_path / "data"),
            "api": {"endpoint": "127.0.0.1:0"},
            "metrics": {"endpoint": None},
            "batch": {"timeout": 0.05},
            "pipelines": {"accounting": {"processors": ["normalize", "cost"], "sinks": ["budgets"]}},
        },
    }
    cfg = build_config(raw)

    async def budget_alerts(api: str) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(f"http://{api}/api/alerts") as resp:
            assert resp.status == 200
            return [a for a in (await resp.json())["alerts"] if a.get("type") == "budget.threshold"]

    runtime = EmbeddedRuntime(cfg)
    endpoints = await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = _otlp_json(2, time.time_ns())  # 2 x 1500 tokens: past the 2000-token limit
            resp = await http.post(f"http://{endpoints.otlp_http}/v1/traces", json=body)
            assert resp.status == 200
        assert endpoints.api is not None
        deadline = time.monotonic() + 20
        while not (seen := await budget_alerts(endpoints.api)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the batch goes through the chain asynchronously
        [alert] = seen
        assert alert["rule"] == "budget:user_daily" and alert["key"] == {"user": "e2e-user"}
    finally:
        await runtime.stop()

    again = EmbeddedRuntime(build_config(raw))
    endpoints = await again.start()
    try:
        assert endpoints.api is not None
        [kept] = await budget_alerts(endpoints.api)
        assert kept["event_id"] == alert["event_id"] and kept["state"] == "firing"
    finally:
        await again.stop()


# --- sessions, users and budgets show share the table style ----------------------------------


def test_session_and_user_views_fit_and_say_what_their_totals_leave_out() -> None:
    from pipeline.query.render_sessions import render_session, render_user

    turns = [
        {"turn": i, "start_ns": 1_700_000_000_000_000_000 + i, "trace_id": f"{i:032x}",
         "root_name": "chat-turn-handler",
         "duration_ns": 1e9, "llm_calls": 1, "errors": 0, "input_tokens": 10, "output_tokens": 5,
         "cost_usd": None if i == 2 else 0.5}
        for i in (1, 2, 3)
    ]  # fmt: skip
    session = {"session_id": "conversation-with-a-long-id", "users": ["ann"], "turns": turns,
               "totals": {"turns": 3, "duration_ns": 3e9, "llm_calls": 3, "errors": 0, "input_tokens": 30,
                          "output_tokens": 15, "cost_usd": 1.0}}  # fmt: skip
    text = render_session(session, Term(width=60))
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines[:-1]), text
    assert f"{3:032x}" in text and lines[-1] == "total $1.00 (1 unpriced turn not included)"
    series = [{"start_ns": 1_700_000_000_000_000_000, "traces": 1, "llm_calls": 1, "input_tokens": 1,
               "output_tokens": 1, "cost_usd": 12345.678}]  # fmt: skip
    user = {"user_id": "ann", "interval": "day", "totals": {"traces": 1, "cost_usd": 12345.678}, "series": series,
            "traces": []}  # fmt: skip
    assert "$12,345.68" in render_user(user, Term(width=200))


def test_budgets_show_uses_the_cost_table_style_and_money_format() -> None:
    from pipeline.cli.budgets import format_table

    rows = [{"budget": "user_daily", "period": "day", "spent_usd": 0.0123456, "limit_usd": 0.1,
             "remaining_usd": 0.0876544,
             "spent_tokens": 600, "limit_tokens": None, "reset_at": "2037-11-24T00:00:00+00:00", "utilization": 0.123,
             "exceeded": False},
            {"budget": "tenant_feature_monthly", "period": "month", "spent_usd": 12.3, "limit_usd": None,
             "remaining_usd": None, "spent_tokens": 1_100_000, "limit_tokens": 1_000_000,
             "reset_at": "2037-12-01T00:00:00+00:00", "utilization": 1.1, "exceeded": True}]  # fmt: skip
    wide = format_table(rows, Term(width=200)).splitlines()
    assert wide[0].split() == ["BUDGET", "PERIOD", "SPENT", "LIMIT", "REMAINING", "TOKENS", "TOKEN", "LIMIT",
                               "RESETS", "AT", "USED"]  # fmt: skip
    assert wide[1].split()[2:5] == ["$0.0123", "$0.10", "$0.0877"] and wide[1].endswith("12%")
    assert wide[2].split()[2:5] == ["$12.30", "-", "-"] and wide[2].endswith("EXCEEDED")
    narrow = format_table(rows, Term(width=60, color=True))
    assert all(len(ANSI.sub("", line)) <= 60 for line in narrow.splitlines()), narrow
    assert "\x1b[31;1mEXCEEDED\x1b[0m" in narrow and "$12.30" in narrow


def test_a_budget_alert_ends_when_its_period_resets() -> None:
    from datetime import UTC, datetime

    store = AlertStore()
    store.apply({"type": "budget.threshold", "state": "firing", "rule": "budget:user_daily", "sink": "budgets",
                 "budget": "user_daily", "period_start": "2037-11-23T00:00:00+00:00", "tenant": "default",
                 "id": "ann", "threshold": 1.0, "reset_at": "2037-11-24T00:00:00+00:00"})  # fmt: skip
    assert len(store.active(datetime(2037, 11, 23, 23, 59, tzinfo=UTC))) == 1
    assert store.active(datetime(2037, 11, 24, 0, 0, tzinfo=UTC)) == []
    assert len(store.recent()) == 1  # still in the history
