"""GenAI log events end to end: opentelemetry-instrumentation-openai-v2 with content capture,
the SDK's real OTLP span, log and metric exporters (env-configured, gRPC and HTTP/protobuf)
against the fake OpenAI server, into a real `tracepipe run`: the prompt and completion show
with their span in `tracepipe traces show --json`, the planted secret redacted; metrics
export succeeds."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.pipeline_proc import ROOT, PipelineProcess, cli, start_pipeline

SECRET = "SECRET-271828"
CONFIG = """
receivers:
  otlp: {}
processors:
  normalize: {}
  cost: {}
  redact:
    custom_rules:
      - id: planted
        regex: "SECRET-[0-9]{6}"
sinks:
  clickhouse: {}
service:
  pipelines:
    traces:
      processors: [normalize, cost, redact]
      sinks: [clickhouse]
"""


@pytest.fixture(scope="module")
def fake_openai():
    loop = asyncio.new_event_loop()
    fake = FakeOpenAI()
    loop.run_until_complete(fake.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield fake
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("genai-logs")
    config = base / "tracepipe.yaml"
    config.write_text(CONFIG)
    p = start_pipeline(base / "data", "--config", str(config))
    yield p
    p.stop()


def run_app(fake: FakeOpenAI, endpoint: str, protocol: str, prompt: str) -> dict:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_EXPORTER_OTLP_INSECURE": "true", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "tests.genai_logs_client", fake.base_url, prompt], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_logs(p: PipelineProcess, trace_id: str, logs: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = p.get(f"/api/traces/{trace_id}")
        if status == 200 and sum(len(s.get("logs", [])) for s in body["spans"]) >= logs:
            return body
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} with {logs} log records did not arrive:\n{p.log()[-3000:]}")


@pytest.mark.parametrize(("protocol", "port_of"), [("http/protobuf", "http_port"), ("grpc", "grpc_port")])
def test_openai_v2_prompt_and_completion_show_with_their_span_redacted(fake_openai, pipeline, protocol,
                                                                       port_of) -> None:
    endpoint = f"http://127.0.0.1:{getattr(pipeline, port_of)}"
    prompt = f"My API key is {SECRET}; what is the refund policy ({protocol})?"
    app = run_app(fake_openai, endpoint, protocol, prompt)
    # every signal was exported successfully (the SDK gets success, not 404 or UNAVAILABLE)
    for signal in ("spans", "logs", "metrics"):
        assert app["results"][signal] and set(app["results"][signal]) == {"SUCCESS"}, app
    (chat,) = app["spans"]
    wait_for_logs(pipeline, chat["trace_id"], 3)

    shown = cli("traces", "show", chat["trace_id"], "--json", "--api-url", pipeline.api)
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    (span,) = trace["spans"]
    assert span["span_id"] == chat["span_id"] and span["request_model"] == "gpt-4o-mini"
    events = {rec["event_name"]: rec for rec in span["logs"]}
    assert set(events) == {"gen_ai.system.message", "gen_ai.user.message", "gen_ai.choice"}
    user = json.loads(events["gen_ai.user.message"]["body"])["content"]
    assert user.startswith("My API key is [REDACTED:planted:") and "what is the refund policy" in user
    choice = json.loads(events["gen_ai.choice"]["body"])
    assert choice["message"]["content"] and choice["finish_reason"] == "stop"
    assert SECRET not in shown.stdout

    text = cli("traces", "show", chat["trace_id"], "--api-url", pipeline.api)
    assert text.returncode == 0 and "3 log event(s)" in text.stdout, text.stdout + text.stderr

    metrics = pipeline.metrics()
    assert 'tracepipe_receiver_accepted_data_points_total{receiver="otlp"}' in metrics
    assert 'tracepipe_genai_log_records_total{event="gen_ai.choice"}' in metrics
    # the instrumentation's GenAI client histograms, re-exposed
    assert 'tracepipe_genai_client_token_usage_tokens_count{model="gpt-4o-mini-2024-07-18",operation="chat",' \
           'provider="openai",service="genai-logs-e2e",type="input"}' in metrics
    assert 'tracepipe_genai_client_operation_duration_seconds_count{model="gpt-4o-mini-2024-07-18"' in metrics


def test_acknowledged_log_records_survive_kill_9(tmp_path: Path) -> None:
    import urllib.request

    from tests.test_otlp_logs_metrics import _trace_id, logs_request, span_request

    data = tmp_path / "data"
    p = start_pipeline(data)
    tid = _trace_id(41).hex()
    try:
        def post(kind: str, body: bytes) -> int:
            req = urllib.request.Request(f"{p.otlp_http}/v1/{kind}", data=body, method="POST",
                                         headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status

        assert post("traces", span_request(41, 2).SerializeToString()) == 200
        deadline = time.monotonic() + 30
        while p.get(f"/api/traces/{tid}")[0] != 200:
            assert time.monotonic() < deadline, p.log()[-3000:]
            time.sleep(0.1)
        assert post("logs", logs_request(41, 2, "acknowledged, then killed", n=3).SerializeToString()) == 200
        p.proc.kill()  # SIGKILL right after the acknowledgement: no shutdown, no flush
        p.proc.wait(10)
    finally:
        p.stop()
    again = start_pipeline(data)
    try:
        status, trace = again.get(f"/api/traces/{tid}")
        assert status == 200
        assert [json.loads(r["body"])["content"] for r in trace["spans"][0]["logs"]] == \
            ["acknowledged, then killed"] * 3
    finally:
        again.stop()
