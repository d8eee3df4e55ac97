"""The web UI (/ui) in headless Chromium against a real `tracepipe run` with auth on: the trace list
and its filters, a 3-level GenAI trace (waterfall, span tree, chat with a redaction marker, a log
event), links to its session and user, the cost charts (same numbers as the API), and tenant
isolation (a read token of tenant A cannot open tenant B's trace). Screenshots go under the
pytest tmp dir (their paths are printed).

Needs Debian's `chromium` and the `playwright` package (no browser download: `executable_path` is
set); `bash tests/run` installs both.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline_proc import PipelineProcess, start_pipeline
from tests.services.requirements import require_binary, require_module

NS = 1_000_000_000
SECRET = "SECRET-314159"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOKENS = {  # name -> (tenant, scopes)
    "acme-ingest": ("acme", ["ingest"]),
    "globex-ingest": ("globex", ["ingest"]),
    "acme-read": ("acme", ["read"]),
    "globex-read": ("globex", ["read"]),
}


def _config(entries: list[dict[str, Any]]) -> str:
    return json.dumps({
        "auth": {"tokens": entries},
        "receivers": {"otlp": {}},
        "processors": {"redact": {"custom_rules": [{"id": "planted", "regex": "SECRET-[0-9]{6}"}]},
                       "normalize": {}, "context": {}, "cost": {}},
        "sinks": {"clickhouse": {}, "budgets": {"budgets": {"user_daily": {"scope": "user", "period": "day",
                                                                            "limit": {"usd": 0.001}}}}},
        "service": {"batch": {"timeout": 0.05},
                    "pipelines": {"traces": {"processors": ["redact", "normalize", "context", "cost"],
                                             "sinks": ["clickhouse", "budgets"]}}},
    })


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _span(tid: str, sid: str, parent: str, name: str, start: int, dur: int, attrs: dict[str, Any],
          kind: int = 1, error: bool = False) -> dict[str, Any]:
    span = {"traceId": tid, "spanId": sid, "name": name, "kind": kind, "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + dur), "attributes": [_kv(k, v) for k, v in attrs.items()]}
    if parent:
        span["parentSpanId"] = parent
    if error:
        span["status"] = {"code": 2, "message": "tool failed"}
    return span


def _body(spans: list[dict[str, Any]], service: str) -> dict[str, Any]:
    resource = {"attributes": [_kv("service.name", service)]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "ui-test"}, "spans": spans}]}]}


def _turn(tid: str, start: int, user: str, session: str, question: str) -> tuple[dict[str, Any], str]:
    """A 3-level trace: handle (root, user/session/feature) -> agent.plan -> chat gpt-4o-mini (LLM)."""
    root, plan, llm, tool = (uuid.uuid4().hex[:16] for _ in range(4))
    inputs = [{"role": "system", "parts": [{"type": "text", "content": "You are a billing assistant."}]},
              {"role": "user", "parts": [{"type": "text", "content": question}]}]
    outputs = [{"role": "assistant", "finish_reason": "stop",
                "parts": [{"type": "text", "content": "Your invoice is on its way."}]}]
    spans = [
        _span(tid, root, "", "handle /chat", start, 900_000_000,
              {"user.id": user, "session.id": session, "feature": "billing-chat"}, kind=2),
        _span(tid, plan, root, "agent.plan", start + 50_000_000, 800_000_000,
              {"gen_ai.operation.name": "invoke_agent"}),
        _span(tid, llm, plan, "chat gpt-4o-mini", start + 100_000_000, 600_000_000, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300, "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps(outputs)}, kind=3),
        _span(tid, tool, plan, "execute_tool lookup_invoice", start + 720_000_000, 100_000_000,
              {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_invoice"}, error=True),
    ]
    return {"spans": spans}, llm


def _logs(tid: str, span_id: str, start: int, content: str) -> dict[str, Any]:
    rec = {"timeUnixNano": str(start + 110_000_000), "traceId": tid, "spanId": span_id,
           "eventName": "gen_ai.user.message", "body": {"stringValue": json.dumps({"content": content})},
           "attributes": [_kv("gen_ai.system", "openai")]}
    return {"resourceLogs": [{"resource": {"attributes": [_kv("service.name", "billing-bot")]},
                              "scopeLogs": [{"scope": {"name": "ui-test"}, "logRecords": [rec]}]}]}


def _request(url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


@dataclass
class Stack:
    p: PipelineProcess
    tokens: dict[str, str]
    first: str  # acme's first turn (the trace the tests open)
    second: str
    other_tenant: str  # globex's trace
    llm_span: str
    session: str
    user: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binary("chromium")
    require_module("playwright")
    base = tmp_path_factory.mktemp("ui")
    tokens = {name: secrets.token_urlsafe(24) for name in TOKENS}
    entries = [{"id": name, "sha256": hashlib.sha256(tok.encode()).hexdigest(), "tenant": TOKENS[name][0],
                "scopes": TOKENS[name][1]} for name, tok in tokens.items()]
    config = base / "tracepipe.yaml"
    config.write_text(_config(entries))
    p = start_pipeline(base / "data", "-c", str(config))
    try:
        now = time.time_ns()
        first, second, other = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
        t1, llm = _turn(first, now - 120 * NS, "u-ana", "sess-ui-1", f"Refund me; my card PIN is {SECRET}")
        t2, _ = _turn(second, now - 60 * NS, "u-ana", "sess-ui-1", "And the second invoice?")
        t3, _ = _turn(other, now - 30 * NS, "u-globex", "sess-globex", "globex question")
        for token, spans, service in (("acme-ingest", t1, "billing-bot"), ("acme-ingest", t2, "billing-bot"),
                                      ("globex-ingest", t3, "globex-bot")):
            status, body = _request(f"{p.otlp_http}/v1/traces", tokens[token], _body(spans["spans"], service))
            assert status == 200, body
        status, body = _request(f"{p.otlp_http}/v1/logs", tokens["acme-ingest"],
                                _logs(first, llm, now - 120 * NS, "Where is my invoice?"))
        assert status == 200, body
        deadline = time.monotonic() + 60
        while True:
            status, got = _request(f"{p.api}/api/traces/{first}", tokens["acme-read"])
            listed = _request(f"{p.api}/api/traces", tokens["acme-read"])[1]
            logs = sum(len(s.get("logs", [])) for s in got["spans"]) if status == 200 else 0
            if status == 200 and logs and len(listed["traces"]) == 2:
                break
            assert time.monotonic() < deadline, p.log()[-3000:]
            time.sleep(0.1)
        dumped = json.dumps(got)
        assert SECRET not in dumped, dumped
        assert "[REDACTED:planted:" in dumped
        yield Stack(p, tokens, first, second, other, llm, "sess-ui-1", "u-ana")
    finally:
        p.stop()


@pytest.fixture
def page(stack: Stack, tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_binary("chromium"), args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1500, "height": 1000})
            pg.set_default_timeout(20_000)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            yield pg
            assert not errors, errors  # no script error on any page the test opened
        finally:
            browser.close()


def _shot(pg: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def _login(pg: Any, stack: Stack, token: str) -> None:
    pg.goto(f"{stack.p.api}/ui#/traces")
    pg.wait_for_selector("#auth-needed")  # auth is on: without a token the page asks for one
    pg.fill("#token-input", stack.tokens[token])
    pg.click("#token-form button[type=submit]")
    pg.wait_for_selector("table.traces")


def test_trace_list_filters_and_opens_a_trace_with_waterfall_chat_and_redaction(stack: Stack, page: Any,
                                                                                  tmp_path: Path) -> None:
    _login(page, stack, "acme-read")
    rows = page.locator("table.traces tbody tr")
    assert [rows.nth(i).get_attribute("data-trace-id") for i in range(rows.count())] == [stack.second, stack.first]
    _shot(page, tmp_path, "traces-list")

    page.fill("#trace-filters input[name=session]", "no-such-session")
    page.click("#trace-filters button[type=submit]")
    page.wait_for_selector("#no-traces")
    assert "session=no-such-session" in page.url
    page.fill("#trace-filters input[name=session]", "")
    page.fill("#trace-filters input[name=model]", "gpt-4o-mini")
    page.select_option("#trace-filters select[name=status]", "error")
    page.click("#trace-filters button[type=submit]")
    page.wait_for_function("document.querySelector('#view').dataset.page === 'traces' && "
                           "location.hash.includes('status=error')")
    page.wait_for_selector("table.traces")
    assert page.locator("table.traces tbody tr").count() == 2  # both turns have the failed tool call

    page.click(f"tr[data-trace-id='{stack.first}'] a")
    page.wait_for_selector("table.waterfall")
    depths = page.locator("table.waterfall tr.span-row").evaluate_all("rs => rs.map(r => Number(r.dataset.depth))")
    assert depths == [0, 1, 2, 2]  # handle -> agent.plan -> (chat, tool), tree order
    names = page.locator("table.waterfall tr.span-row td.name").all_inner_texts()
    assert "handle /chat" in names[0] and "chat gpt-4o-mini" in names[2]
    bars = page.locator("table.waterfall .timeline .bar").evaluate_all(
        "bs => bs.map(b => [parseFloat(b.style.left), parseFloat(b.style.width)])")
    assert bars[0][0] == 0 and bars[0][1] == pytest.approx(100, abs=0.5)  # the root spans the trace
    assert bars[2][0] == pytest.approx(100 / 9 * 1, abs=0.5)  # the LLM span starts 100 ms into 900 ms
    llm_row = page.locator(f"tr[data-span-id='{stack.llm_span}']")
    assert "gpt-4o-mini" in llm_row.inner_text() and "1,500" in llm_row.inner_text()  # tokens in + out
    assert page.locator("tr.span-row").nth(0).locator("td").last.inner_text().endswith("4 spans")  # subtree

    pane = page.locator("#span-pane")  # the first LLM span is selected on open
    assert pane.get_attribute("data-span-id") == stack.llm_span
    roles = pane.locator(".msg").evaluate_all("ms => ms.map(m => m.dataset.role)")
    assert roles == ["system", "user", "assistant", "user"]  # attributes, then the gen_ai.user.message event
    user_msg = pane.locator(".msg.user").first
    assert user_msg.locator(".redacted").inner_text().startswith("[REDACTED:planted:")
    assert SECRET not in page.content()
    assert "Where is my invoice?" in pane.locator(".msg").nth(3).inner_text()
    assert "gen_ai.request.model" in pane.inner_text()  # all attributes listed
    _shot(page, tmp_path, "trace-llm-span")

    page.locator("tr.span-row").nth(3).click()  # the failed tool call: its error shows in the pane
    page.wait_for_selector("#span-pane .banner.error")
    assert "tool failed" in page.locator("#span-pane .banner.error").inner_text()

    page.click(f"a[href='#/sessions/{stack.session}']")
    page.wait_for_selector("table.turns")
    turns = page.locator("table.turns tbody tr")
    assert turns.count() == 2
    assert stack.first.startswith(turns.nth(0).locator("td.mono").inner_text())  # oldest turn first
    _shot(page, tmp_path, "session")
    page.locator(f"table.turns a[href='#/users/{stack.user}']").first.click()
    page.wait_for_selector("table.user-traces")
    assert page.locator("table.user-traces tbody tr").count() == 2
    assert page.locator(".chart[data-chart='Spend per day'] rect.bar").count() >= 1
    _shot(page, tmp_path, "user")


def test_cost_charts_show_the_api_numbers(stack: Stack, page: Any, tmp_path: Path) -> None:
    _login(page, stack, "acme-read")
    page.click("nav a[data-nav=cost]")
    page.wait_for_selector(".chart[data-chart='Spend by tenant']")
    for by in ("model", "feature", "user", "tenant", "service"):
        status, rows = _request(f"{stack.p.api}/api/analytics/cost?by={by}&since=24h", stack.tokens["acme-read"])
        assert status == 200 and rows
        bars = page.locator(f".chart[data-chart='Spend by {by}'] rect.bar").evaluate_all(
            "bs => bs.map(b => [b.dataset.label, Number(b.dataset.value)])")
        assert bars == [[r["group"] if r["group"] is not None else "(none)", r["cost_usd"] or 0] for r in rows], by
    status, spend = _request(f"{stack.p.api}/api/analytics/spend?since=24h&interval=hour", stack.tokens["acme-read"])
    assert status == 200 and spend["totals"]["traces"] == 2  # acme's two turns, not globex's trace
    bars = page.locator(".chart[data-chart='Spend per hour'] rect.bar").evaluate_all(
        "bs => bs.map(b => Number(b.dataset.value))")
    assert bars == [b["cost_usd"] or 0 for b in spend["series"]] and sum(bars) == pytest.approx(
        spend["totals"]["cost_usd"])
    assert page.locator(".chart[data-chart='Spend by tenant'] rect.bar").evaluate_all(
        "bs => bs.map(b => b.dataset.label)") == ["acme"]
    model_cost = _request(f"{stack.p.api}/api/analytics/cost?by=model", stack.tokens["acme-read"])[1][0]["cost_usd"]
    assert model_cost > 0  # gpt-4o-mini is priced
    _shot(page, tmp_path, "cost")
    page.click("nav a[data-nav=sessions]")  # the sessions list links to acme's session only
    page.wait_for_selector(f"#view a[href='#/sessions/{stack.session}']")
    assert page.locator("#view a[href='#/sessions/sess-globex']").count() == 0
    status, alerts = _request(f"{stack.p.api}/api/alerts", stack.tokens["acme-read"])
    assert status == 200, alerts
    page.click("nav a[data-nav=alerts]")
    page.wait_for_selector("#view h2:has-text('Active')")
    assert f"Active ({alerts['active_count']})" in page.locator("#view").inner_text()


def test_budgets_page_shows_a_users_utilisation(stack: Stack, page: Any) -> None:
    status, want = _request(f"{stack.p.api}/api/budgets/user/{stack.user}", stack.tokens["acme-read"])
    assert status == 200 and want["budgets"][0]["spent_usd"] > 0, want
    _login(page, stack, "acme-read")
    page.click("nav a[data-nav=budgets]")
    page.fill("input[name=scope]", "user")
    page.fill("input[name=id]", stack.user)
    page.click("button:has-text('Show utilisation')")
    row = page.wait_for_selector("table.budget-status tr[data-budget=user_daily]")
    got = row.inner_text()
    b = want["budgets"][0]
    assert f"{b['utilization'] * 100:.1f}%" in got and "day (UTC)" in got


def test_a_read_token_of_one_tenant_cannot_open_another_tenants_trace(stack: Stack, page: Any,
                                                                       tmp_path: Path) -> None:
    _login(page, stack, "acme-read")
    listed = page.locator("table.traces tbody tr").evaluate_all("rs => rs.map(r => r.dataset.traceId)")
    assert stack.other_tenant not in listed
    page.goto(f"{stack.p.api}/ui#/traces/{stack.other_tenant}")
    page.wait_for_selector("#not-found")
    assert page.locator("table.waterfall").count() == 0 and "globex" not in page.locator("#view").inner_text()
    _shot(page, tmp_path, "other-tenant")
    page.click("#token-clear")  # the page itself is static and open; the data needs the token
    page.wait_for_selector("#auth-needed")
    # globex's own read token opens it (same page, same tab)
    page.fill("#token-input", stack.tokens["globex-read"])
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("table.waterfall")
    assert "u-globex" in page.locator("#view").inner_text()


def test_ui_files_are_static_and_open_but_the_api_still_needs_the_token(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.p.api}/ui", timeout=10) as r:
        html = r.read().decode()
        assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert '<script type="module" src="/ui/static/app.js">' in html
    with urllib.request.urlopen(f"{stack.p.api}/ui/static/app.js", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
    for path in ("/ui/static/..%2Fapi%2Fui.py", "/ui/static/missing.js", "/ui/static/__init__.py"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{stack.p.api}{path}", timeout=10)
        assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{stack.p.api}/api/traces", timeout=10)
    assert e.value.code == 401
