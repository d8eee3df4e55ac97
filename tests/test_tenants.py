"""Tenants end to end in one process: OTLP with the resource `tenant.id` (as the auth receivers stamp
it) through the embedded runtime into chDB, local budget counters and the alert store; then the
query API as two tenants' read principals and an admin, deletion and the audit log.

Principals are set on `request["principal"]` by a test-only middleware (what the auth middleware
does for a real token)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipeline.anomaly.config import AnomalyConfig
from pipeline.api import ApiContext, build_app
from pipeline.auth.principal import Principal
from pipeline.config import build_config
from pipeline.embedded import EmbeddedRuntime
from pipeline.spans import Resource, Span, SpanBatch
from processors.anomaly import AnomalyProcessor
from tests.anomaly_streams import NS, T0, Collected, ManualClock, context

PRINCIPALS = {
    "acme": Principal("acme00000001", "acme", frozenset({"read"})),
    "globex": Principal("globex000001", "globex", frozenset({"read"})),
    "acme-ingest": Principal("acmeingest01", "acme", frozenset({"ingest"})),
    "admin": Principal("admin0000001", "ops", frozenset({"admin"})),
}


@web.middleware
async def as_principal(request: web.Request, handler: Any) -> web.StreamResponse:
    who = request.headers.get("X-Test-As")
    if who == "bad-token":  # what the auth middleware answers to an unknown token
        return web.json_response({"error": "invalid token"}, status=401)
    if who:
        request["principal"] = PRINCIPALS[who]
    return await handler(request)


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def _trace(user: str, cost: float, end_ns: int) -> tuple[str, list[dict[str, Any]]]:
    """A two-span trace: a root without user and an LLM child carrying user and cost."""
    tid, root = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    spans = [
        {"traceId": tid, "spanId": root, "name": "handle", "kind": 2,
         "startTimeUnixNano": str(end_ns - 3 * NS), "endTimeUnixNano": str(end_ns)},
        {"traceId": tid, "spanId": uuid.uuid4().hex[:16], "parentSpanId": root, "name": "chat gpt-4o", "kind": 3,
         "startTimeUnixNano": str(end_ns - 2 * NS), "endTimeUnixNano": str(end_ns - NS),
         "attributes": [_kv("gen_ai.request.model", "gpt-4o"), _kv("gen_ai.usage.cost_usd", cost),
                        _kv("gen_ai.usage.input_tokens", 100), _kv("gen_ai.usage.output_tokens", 10),
                        _kv("user.id", user), _kv("session.id", f"s-{user}")]},
    ]
    return tid, spans


def _otlp(by_tenant: dict[str | None, list[dict[str, Any]]]) -> dict[str, Any]:
    resource_spans = []
    for tenant, spans in by_tenant.items():
        attrs = [_kv("service.name", "bot")] + ([_kv("tenant.id", tenant)] if tenant else [])
        scope_spans = [{"scope": {"name": "t"}, "spans": spans}]
        resource_spans.append({"resource": {"attributes": attrs}, "scopeSpans": scope_spans})
    return {"resourceSpans": resource_spans}


@dataclass
class World:
    runtime: EmbeddedRuntime
    api: TestClient
    traces: dict[str, str]  # name -> trace id
    data_dir: Path
    otlp_http: str

    async def get(self, who: str, path: str, **params: str) -> tuple[int, Any]:
        r = await self.api.get(path, params=params, headers={"X-Test-As": who})
        return r.status, await r.json()

    async def delete(self, who: str, path: str, **params: str) -> tuple[int, Any]:
        r = await self.api.delete(path, params=params, headers={"X-Test-As": who})
        return r.status, await r.json()


async def _eventually(probe: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


@pytest.fixture
async def world(tmp_path: Path, clickhouse_dsn: str, chdb_database: str) -> AsyncIterator[World]:
    raw = {
        "receivers": {"otlp": {"grpc": None, "http": {"endpoint": "127.0.0.1:0"}}},
        "sinks": {
            "clickhouse": {"dsn": clickhouse_dsn, "database": chdb_database},
            "budgets": {"budgets": {"user_daily": {"scope": "user", "period": "day", "limit": {"usd": 1.0}}}},
        },
        "service": {
            "data_dir": str(tmp_path / "data"),
            "api": {"endpoint": None},
            "metrics": {"endpoint": None},
            "batch": {"timeout": 0.05},
            "pipelines": {"traces": {"sinks": ["clickhouse", "budgets"]}},
        },
    }
    runtime = EmbeddedRuntime(build_config(raw))
    endpoints = await runtime.start()
    now = time.time_ns()
    traces: dict[str, str] = {}
    payload: dict[str | None, list[dict[str, Any]]] = {"acme": [], "globex": [], None: []}
    # The same user id "u1" in both tenants: their data, budgets and alerts must never mix.
    for name, tenant, user, cost in (("a1", "acme", "u1", 0.6), ("a2", "acme", "u1", 0.6),
                                     ("g1", "globex", "u1", 0.1), ("g2", "globex", "u2", 0.05),
                                     ("d1", None, "u1", 0.01)):
        tid, spans = _trace(user, cost, now - 60 * NS)
        traces[name] = tid
        payload[tenant].extend(spans)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"http://{endpoints.otlp_http}/v1/traces", json=_otlp(payload))
        assert resp.status == 200
    ctx = ApiContext(
        telemetry=runtime.telemetry,
        queries=runtime.queries,
        services=runtime.services,
    )
    app = build_app(ctx)
    app.middlewares.append(as_principal)  # inside the audit middleware, where pipeline/http_servers.py puts auth
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    w = World(runtime, client, traces, tmp_path / "data", endpoints.otlp_http)

    async def stored() -> bool:
        status, body = await w.get("admin", "/api/traces", limit="100")
        spent = runtime.services.budgets
        [g] = await spent.status("user", "u1", tenant="globex")
        return status == 200 and len(body["traces"]) == 5 and g.spans == 1

    assert await _eventually(stored), "the spans did not reach the stores"
    try:
        yield w
    finally:
        await client.close()
        await runtime.stop()


def _ids(body: dict[str, Any]) -> set[str]:
    return {t["trace_id"] for t in body["traces"]}


async def test_each_tenant_sees_only_its_traces_and_admin_sees_all(world: World) -> None:
    t = world.traces
    status, acme = await world.get("acme", "/api/traces")
    assert status == 200 and _ids(acme) == {t["a1"], t["a2"]}
    assert {x["tenant_id"] for x in acme["traces"]} == {"acme"}
    _, globex = await world.get("globex", "/api/traces")
    assert _ids(globex) == {t["g1"], t["g2"]}
    _, everyone = await world.get("admin", "/api/traces", limit="100")
    assert _ids(everyone) == set(t.values())
    _, narrowed = await world.get("admin", "/api/traces", tenant="globex")
    assert _ids(narrowed) == {t["g1"], t["g2"]}
    _, moved = await world.get("acme", "/api/traces", tenant="globex")  # a read token stays in its tenant
    assert _ids(moved) == {t["a1"], t["a2"]}
    # Filters still apply inside the tenant: globex's u1 is not acme's u1.
    _, acme_u1 = await world.get("acme", "/api/traces", user="u1")
    assert _ids(acme_u1) == {t["a1"], t["a2"]}


async def test_sessions_and_users_are_each_tenants_own(world: World) -> None:
    t = world.traces
    # Both tenants have a session "s-u1" and a user "u1": each sees only its own turns and traces.
    status, acme = await world.get("acme", "/api/sessions/s-u1")
    assert status == 200 and [turn["trace_id"] for turn in acme["turns"]] in ([t["a1"], t["a2"]], [t["a2"], t["a1"]])
    _, globex = await world.get("globex", "/api/sessions/s-u1")
    assert [turn["trace_id"] for turn in globex["turns"]] == [t["g1"]]
    status, _ = await world.get("acme", "/api/sessions/s-u2")  # globex's only
    assert status == 404
    _, listed = await world.get("acme", "/api/sessions")
    assert {x["session_id"] for x in listed["sessions"]} == {"s-u1"}
    _, user = await world.get("globex", "/api/users/u1")
    assert {x["trace_id"] for x in user["traces"]} == {t["g1"]}
    status, _ = await world.get("acme-ingest", "/api/sessions")  # an ingest token reads nothing
    assert status == 403


async def test_a_trace_of_another_tenant_is_404_like_an_unknown_one(world: World) -> None:
    status, body = await world.get("acme", f"/api/traces/{world.traces['g1']}")
    unknown = uuid.uuid4().hex
    status_unknown, body_unknown = await world.get("acme", f"/api/traces/{unknown}")
    assert (status, status_unknown) == (404, 404)
    assert body["error"] == body_unknown["error"].replace(unknown, world.traces["g1"])
    status, own = await world.get("acme", f"/api/traces/{world.traces['a1']}")
    assert status == 200 and len(own["spans"]) == 2
    status, _ = await world.get("admin", f"/api/traces/{world.traces['g1']}")
    assert status == 200


async def test_spans_another_tenant_sends_under_a_trace_id_never_join_that_tenants_trace(world: World) -> None:
    a1 = world.traces["a1"]
    _, spans = _trace("intruder", 5.0, time.time_ns() - 30 * NS)
    for s in spans:
        s["traceId"] = a1
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"http://{world.otlp_http}/v1/traces", json=_otlp({"globex": spans}))
        assert resp.status == 200

    async def arrived() -> bool:
        status, body = await world.get("admin", f"/api/traces/{a1}")
        return status == 200 and len(body["spans"]) == 4

    assert await _eventually(arrived)
    _, own = await world.get("acme", f"/api/traces/{a1}")
    assert len(own["spans"]) == 2 and round(own["totals"]["cost_usd"], 6) == 0.6
    _, listed = await world.get("acme", "/api/traces")
    [row] = [x for x in listed["traces"] if x["trace_id"] == a1]
    assert (row["spans"], round(row["cost_usd"], 6), row["user_id"]) == (2, 0.6, "u1")
    _, acme_cost = await world.get("acme", "/api/analytics/cost", by="user")
    assert {r["group"]: round(r["cost_usd"], 6) for r in acme_cost} == {"u1": 1.2}
    _, theirs = await world.get("globex", "/api/traces")
    [mine] = [x for x in theirs["traces"] if x["trace_id"] == a1]
    assert (mine["spans"], mine["user_id"]) == (2, "intruder")  # globex sees only what globex sent


async def test_costs_are_per_tenant(world: World) -> None:
    _, acme = await world.get("acme", "/api/analytics/cost", by="user")
    assert {r["group"]: round(r["cost_usd"], 6) for r in acme} == {"u1": 1.2}
    _, globex = await world.get("globex", "/api/analytics/cost", by="user")
    assert {r["group"]: round(r["cost_usd"], 6) for r in globex} == {"u1": 0.1, "u2": 0.05}
    _, by_model = await world.get("globex", "/api/analytics/cost", by="model")
    assert [(r["group"], r["calls"]) for r in by_model] == [("gpt-4o", 2)]
    _, everyone = await world.get("admin", "/api/analytics/cost", by="user")
    assert {r["group"]: round(r["cost_usd"], 6) for r in everyone} == {"u1": 1.31, "u2": 0.05}
    _, narrowed = await world.get("admin", "/api/analytics/cost", by="user", tenant="acme")
    assert {r["group"]: round(r["cost_usd"], 6) for r in narrowed} == {"u1": 1.2}


async def test_budget_counters_and_checks_are_per_tenant(world: World) -> None:
    status, acme = await world.get("acme", "/api/budgets/user/u1")
    assert status == 200
    [a] = acme["budgets"]
    assert (round(a["spent_usd"], 6), a["exceeded"]) == (1.2, True)
    _, globex = await world.get("globex", "/api/budgets/user/u1")
    [g] = globex["budgets"]
    assert (round(g["spent_usd"], 6), a["spans"], g["spans"], g["exceeded"]) == (0.1, 2, 1, False)
    # The guard's check: acme's u1 is blocked, globex's u1 may go on.
    status, _ = await world.get("acme", "/api/budgets/check", user="u1")
    assert status == 429
    status, _ = await world.get("globex", "/api/budgets/check", user="u1")
    assert status == 200
    # An admin picks the tenant; a read token cannot.
    _, picked = await world.get("admin", "/api/budgets/user/u1", as_tenant="globex")
    assert round(picked["budgets"][0]["spent_usd"], 6) == 0.1
    status, _ = await world.get("acme", "/api/budgets/user/u1", as_tenant="globex")
    assert status == 403
    # Spans without a resource tenant.id count for tenant "default" (what ANONYMOUS reads).
    r = await world.api.get("/api/budgets/user/u1")
    assert round((await r.json())["budgets"][0]["spent_usd"], 6) == 0.01


async def test_alerts_are_per_tenant(world: World) -> None:
    async def acme_alerts() -> list[dict[str, Any]]:
        _, body = await world.get("acme", "/api/alerts", state="all")
        return body["alerts"]

    alerts = await _eventually(acme_alerts)
    assert alerts and {a["tenant"] for a in alerts} == {"acme"}
    assert {a["key"]["user"] for a in alerts} == {"u1"}
    _, globex = await world.get("globex", "/api/alerts", state="all")
    assert globex["alerts"] == []
    _, everyone = await world.get("admin", "/api/alerts", state="all")
    assert len(everyone["alerts"]) == len(alerts)


async def test_reads_need_the_read_scope_and_deletes_the_admin_scope(world: World) -> None:
    for path in ("/api/traces", f"/api/traces/{world.traces['a1']}", "/api/analytics/cost", "/api/alerts",
                 "/api/budgets/user/u1"):
        status, body = await world.get("acme-ingest", path)
        assert status == 403 and "read" in body["error"], path
    status, _ = await world.delete("acme", "/api/users/u1")
    assert status == 403
    status, _ = await world.get("acme", "/api/audit")
    assert status == 403
    _, acme = await world.get("acme", "/api/traces")
    assert len(acme["traces"]) == 2  # nothing was deleted


async def test_forget_user_within_a_tenant_removes_spans_summaries_counters_and_alerts(world: World) -> None:
    t = world.traces
    status, body = await world.delete("admin", "/api/users/u1", tenant="acme")
    assert status == 200 and body["errors"] == {}
    removed = body["removed"]
    assert removed["clickhouse"] == {"spans": 4, "trace_summaries": 2}  # both acme traces, whole
    assert removed["budgets"] == {"counters": 1}
    assert removed["alerts"]["events"] >= 1
    _, acme = await world.get("acme", "/api/traces")
    assert acme["traces"] == []
    _, budget = await world.get("acme", "/api/budgets/user/u1")
    assert budget["budgets"][0]["spent_usd"] == 0
    _, alerts = await world.get("acme", "/api/alerts", state="all")
    assert alerts["alerts"] == []
    # globex's u1 and the default tenant's u1 are untouched.
    _, globex = await world.get("globex", "/api/traces")
    assert _ids(globex) == {t["g1"], t["g2"]}
    _, gb = await world.get("globex", "/api/budgets/user/u1")
    assert round(gb["budgets"][0]["spent_usd"], 6) == 0.1
    status, _ = await world.get("admin", f"/api/traces/{t['d1']}")
    assert status == 200


async def test_forget_trace_and_tenant(world: World) -> None:
    t = world.traces
    status, body = await world.delete("admin", f"/api/traces/{t['g1']}")
    assert status == 200 and body["removed"]["clickhouse"] == {"spans": 2, "trace_summaries": 1}
    status, _ = await world.get("globex", f"/api/traces/{t['g1']}")
    assert status == 404
    status, body = await world.delete("admin", "/api/tenants/globex")
    assert status == 200
    assert body["removed"]["clickhouse"] == {"spans": 2, "trace_summaries": 1}  # g2 was left
    assert body["removed"]["budgets"] == {"counters": 2}  # u1 and u2
    _, globex = await world.get("globex", "/api/traces")
    assert globex["traces"] == []
    _, everyone = await world.get("admin", "/api/traces", limit="100")
    assert _ids(everyone) == {t["a1"], t["a2"], t["d1"]}
    status, again = await world.delete("admin", "/api/tenants/globex")
    assert status == 200 and again["removed"]["clickhouse"] == {"spans": 0, "trace_summaries": 0}


async def test_the_audit_log_records_every_read_and_delete(world: World) -> None:
    g1 = world.traces["g1"]
    await world.get("acme", f"/api/traces/{g1}")  # 404: another tenant's
    await world.get("acme-ingest", "/api/traces")  # 403
    r = await world.api.get("/api/no-such-thing", headers={"X-Test-As": "globex"})
    assert r.status == 404
    r = await world.api.get("/api/traces", headers={"X-Test-As": "bad-token"})
    assert r.status == 401
    await world.delete("admin", f"/api/traces/{g1}")
    status, body = await world.get("admin", "/api/audit", since="1h", limit="1000")
    assert status == 200
    entries = body["entries"]
    mine = [(e["token_id"], e["tenant"], e["method"], e["route"], e["params"], e["status"]) for e in entries]
    assert ("acme00000001", "acme", "GET", "/api/traces/{trace_id}", {"trace_id": g1}, 404) in mine
    assert ("acmeingest01", "acme", "GET", "/api/traces", {}, 403) in mine
    assert ("admin0000001", "ops", "DELETE", "/api/traces/{trace_id}", {"trace_id": g1}, 200) in mine
    assert ("globex000001", "globex", "GET", "(no route)", {}, 404) in mine
    assert ("refused", "-", "GET", "/api/traces", {}, 401) in mine
    assert entries[0]["route"] == "/api/traces/{trace_id}" and entries[0]["method"] == "DELETE"  # newest first
    _, only_acme = await world.get("admin", "/api/audit", tenant="acme", limit="1000")
    assert {e["tenant"] for e in only_acme["entries"]} == {"acme"}
    _, one_token = await world.get("admin", "/api/audit", token="acmeingest01")
    assert [e["status"] for e in one_token["entries"]] == [403]
    # Durable: the same entries are in the file, one JSON object per line.
    lines = (world.data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    assert any(json.loads(x)["method"] == "DELETE" and json.loads(x)["params"] == {"trace_id": g1} for x in lines)
    assert all("Authorization" not in x for x in lines)


# --- anomaly keys ------------------------------------------------------------------------


def test_anomaly_windows_and_alerts_are_per_tenant() -> None:
    cfg = AnomalyConfig.model_validate({
        "group_by": ["service"],
        "window": {"size": 60},
        "allowed_lateness": 0,
        "idle_close": None,
        "rules": [{"name": "costly", "metric": "cost", "kind": "absolute", "threshold": 1.0, "min_calls": 1}],
    })
    clock = ManualClock()
    events = Collected()
    proc = AnomalyProcessor("anomaly", cfg, context(), clock=clock, on_event=events)
    tenants = {t: Resource({"service.name": "bot", **({"tenant.id": t} if t else {})}) for t in ("a", "b", None)}

    def span(tenant: str | None, i: int, end: int, cost: float) -> Span:
        return Span(trace_id=f"{i:032x}", span_id=f"{i:016x}", name="chat", start_ns=end - NS, end_ns=end,
                    attributes={"gen_ai.usage.cost_usd": cost}, resource=tenants[tenant])

    # Same service in three tenants: only tenant a spends over the threshold in window 0.
    spans = [span("a", 1, T0 + NS, 0.8), span("a", 2, T0 + 2 * NS, 0.8),
             span("b", 3, T0 + NS, 0.3), span(None, 4, T0 + NS, 0.3), span(None, 5, T0 + 3 * NS, 0.3)]
    clock.now = (T0 + 130 * NS) / NS
    proc.process(SpanBatch(spans, "w0"))
    proc.process(SpanBatch([span("b", 6, T0 + 125 * NS, 0.01)], "w2"))  # closes window 0
    assert proc.stats()["keys"] == 3
    firing = events.of("firing")
    assert [(e["tenant"], e["key"], e["observed"]) for e in firing] == [("a", {"service": "bot"}, pytest.approx(1.6))]
    assert firing[0]["example_trace_ids"][0] in (f"{1:032x}", f"{2:032x}")
