"""End to end through the real `tracepipe run` process: OTel SDK -> OTLP -> chain -> chDB -> query.

The pipeline runs as a subprocess (its own chDB engine, as a user runs it); spans come from
the real OpenTelemetry Python SDK over gRPC and HTTP/protobuf and from raw OTLP/JSON, and
are read back through the query API and the CLI, while running and after it stopped.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.pipeline_proc import PipelineProcess, cli, start_pipeline

T0 = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000  # recent (inside the TTL), whole seconds


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    p = start_pipeline(tmp_path_factory.mktemp("e2e") / "data")
    yield p
    p.stop()


def _provider(exporter, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    return provider


def _emit_rag_trace(provider: TracerProvider, user: str) -> str:
    """A 3-level trace: rag-pipeline -> (retrieval -> embedding, vector_search), synthesis (LLM)."""
    tracer = provider.get_tracer("e2e")
    ms = 1_000_000
    root = tracer.start_span("rag-pipeline", kind=SpanKind.SERVER, start_time=T0,
                             attributes={"user.id": user, "app.feature": "support"})
    from opentelemetry import trace as trace_api

    ctx_root = trace_api.set_span_in_context(root)
    retrieval = tracer.start_span("retrieval", context=ctx_root, start_time=T0 + 10 * ms)
    ctx_ret = trace_api.set_span_in_context(retrieval)
    emb = tracer.start_span("embedding", context=ctx_ret, start_time=T0 + 20 * ms, kind=SpanKind.CLIENT,
                            attributes={"gen_ai.operation.name": "embeddings",
                                        "gen_ai.request.model": "text-embedding-3-small",
                                        "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 1000})
    emb.end(end_time=T0 + 220 * ms)
    vs = tracer.start_span("vector_search", context=ctx_ret, start_time=T0 + 220 * ms,
                           attributes={"db.system": "qdrant"})
    vs.end(end_time=T0 + 1800 * ms)
    retrieval.end(end_time=T0 + 1810 * ms)
    synth = tracer.start_span("synthesis", context=ctx_root, start_time=T0 + 1810 * ms, kind=SpanKind.CLIENT,
                              attributes={"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
                                          "gen_ai.usage.prompt_tokens": 2000, "gen_ai.usage.completion_tokens": 500,
                                          "gen_ai.operation.name": "chat"})
    synth.add_event("gen_ai.choice", {"index": 0}, timestamp=T0 + 2400 * ms)
    synth.set_status(Status(StatusCode.ERROR, "rate limited once"))
    synth.end(end_time=T0 + 2500 * ms)
    root.end(end_time=T0 + 2500 * ms)
    return format(root.get_span_context().trace_id, "032x")


def _wait_for_trace(p: PipelineProcess, trace_id: str, spans: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = p.get(f"/api/traces/{trace_id}")
        if status == 200 and len(body["spans"]) >= spans:
            return body
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} did not arrive with {spans} spans:\n{p.log()[-3000:]}")


def _usd(model: str, inp: int, out: int) -> float:
    return float(calc_price(Usage(input_tokens=inp, output_tokens=out), model_ref=model, provider_id="openai")
                 .total_price)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_trace_arrives_once_with_tree_attributes_times_and_cost(pipeline: PipelineProcess, transport: str):
    exporter = (GrpcExporter(endpoint=pipeline.otlp_grpc, insecure=True) if transport == "grpc"
                else HttpExporter(endpoint=f"{pipeline.otlp_http}/v1/traces"))
    provider = _provider(exporter, f"rag-{transport}")
    trace_id = _emit_rag_trace(provider, user=f"user-{transport}")
    provider.shutdown()
    trace = _wait_for_trace(pipeline, trace_id, 5)

    spans = {s["name"]: s for s in trace["spans"]}
    assert len(trace["spans"]) == 5  # every span once
    assert spans["rag-pipeline"]["parent_span_id"] == ""
    assert spans["retrieval"]["parent_span_id"] == spans["rag-pipeline"]["span_id"]
    assert spans["embedding"]["parent_span_id"] == spans["retrieval"]["span_id"]
    assert spans["synthesis"]["parent_span_id"] == spans["rag-pipeline"]["span_id"]
    assert spans["rag-pipeline"]["service_name"] == f"rag-{transport}"
    assert spans["rag-pipeline"]["attributes"]["user.id"] == f"user-{transport}"
    assert spans["vector_search"]["attributes"]["db.system"] == "qdrant"
    assert spans["synthesis"]["status_code"] == "Error"
    assert spans["synthesis"]["status_message"] == "rate limited once"
    assert spans["vector_search"]["duration_ns"] == 1_580_000_000
    assert spans["synthesis"]["events"][0]["name"] == "gen_ai.choice"
    # normalize mapped the older dialect onto the canonical names
    synth_attrs = spans["synthesis"]["attributes"]
    assert synth_attrs["gen_ai.usage.input_tokens"] in (2000, "2000")
    assert synth_attrs["gen_ai.provider.name"] == "openai"
    # cost: per span from genai-prices, totals over the trace
    want_synth = _usd("gpt-4o", 2000, 500)
    want_emb = _usd("text-embedding-3-small", 1000, 0)
    assert spans["synthesis"]["cost_usd"] == pytest.approx(want_synth, rel=1e-9)
    assert spans["embedding"]["cost_usd"] == pytest.approx(want_emb, rel=1e-9)
    assert spans["vector_search"]["cost_usd"] is None  # not a GenAI span: no cost, not 0
    totals = trace["totals"]
    assert totals["cost_usd"] == pytest.approx(want_synth + want_emb, rel=1e-9)
    assert totals["input_tokens"] == 3000 and totals["output_tokens"] == 500
    assert totals["spans"] == 5 and totals["errors"] == 1
    assert totals["duration_ns"] == 2_500_000_000


def test_cli_shows_the_tree_while_running_and_after_stop(tmp_path: Path):
    p = start_pipeline(tmp_path / "data")
    try:
        provider = _provider(HttpExporter(endpoint=f"{p.otlp_http}/v1/traces"), "rag-app")
        trace_id = _emit_rag_trace(provider, user="u1")
        provider.shutdown()
        _wait_for_trace(p, trace_id, 5)
        running = cli("traces", "show", trace_id, "--api-url", p.api)
        assert running.returncode == 0, running.stderr
    finally:
        assert p.stop() == 0, p.log()[-3000:]
    stopped = cli("traces", "show", trace_id, "--data-dir", str(p.data_dir), "--api", "off")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == running.stdout
    head, *rows, total = stopped.stdout.splitlines()
    assert head.split() == ["OFFSET", "TIMELINE", "SPAN"] and total.startswith("total: 5 spans, 1 error, 2.5s")
    col = head.index("SPAN")  # the waterfall: start offset and bar, then the tree
    offsets = {ln[col:].strip(" │├└─").split(" (")[0]: ln[:col].split()[0] for ln in rows}
    lines = [ln[col:] for ln in rows]
    assert lines[0].startswith("rag-pipeline (2.5s, $") and offsets["rag-pipeline"] == "+0"
    assert (offsets["retrieval"], offsets["embedding"], offsets["synthesis"]) == ("+10ms", "+20ms", "+1.81s")
    indent = {ln.strip(" │├└─").split(" (")[0]: len(ln) - len(ln.lstrip(" │├└─")) for ln in lines[1:]}
    assert indent["retrieval"] < indent["embedding"] and indent["retrieval"] == indent["synthesis"]
    as_json = cli("traces", "show", trace_id, "--data-dir", str(p.data_dir), "--api", "off", "--json")
    assert json.loads(as_json.stdout)["trace_id"] == trace_id
    cost = cli("cost", "--by", "model", "--since", "100000h", "--data-dir", str(p.data_dir), "--api", "off", "--json")
    assert cost.returncode == 0, cost.stderr
    by_model = {row["group"]: row for row in json.loads(cost.stdout)}
    assert by_model["gpt-4o"]["calls"] == 1
    assert by_model["gpt-4o"]["cost_usd"] == pytest.approx(_usd("gpt-4o", 2000, 500), rel=1e-9)


def test_otlp_json_with_hex_ids_and_string_int64s_is_stored(pipeline: PipelineProcess):
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                             "value": {"stringValue": "json-app"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace_id, "spanId": span_id, "name": "chat gpt-4o-mini", "kind": 3,
                "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1_200_000_000),
                "attributes": [
                    {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                    {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": "1200"}},
                    {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "300"}}],
                "status": {"code": 2, "message": "bad"}}]}]}]}
    req = urllib.request.Request(f"{pipeline.otlp_http}/v1/traces", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
    trace = _wait_for_trace(pipeline, trace_id, 1)
    span = trace["spans"][0]
    assert span["span_id"] == span_id and span["status_code"] == "Error"
    assert span["duration_ns"] == 1_200_000_000
    assert span["cost_usd"] == pytest.approx(
        float(calc_price(Usage(input_tokens=1200, output_tokens=300), model_ref="gpt-4o-mini",
                         provider_id="openai").total_price), rel=1e-9)


def test_metrics_endpoint_exposes_llm_and_self_metrics(pipeline: PipelineProcess):
    provider = _provider(GrpcExporter(endpoint=pipeline.otlp_grpc, insecure=True), "metrics-app")
    trace_id = _emit_rag_trace(provider, user="m")
    provider.shutdown()
    _wait_for_trace(pipeline, trace_id, 5)
    text = pipeline.metrics()
    assert 'tracepipe_llm_cost_usd_total{model="gpt-4o",operation="chat",provider="openai",service="metrics-app"}' \
        in text
    assert 'tracepipe_llm_tokens_total{model="gpt-4o",operation="chat",provider="openai",service="metrics-app",' \
           'type="input"} 2000.0' in text
    assert "tracepipe_receiver_accepted_spans_total" in text
    # A span without a GenAI operation: "other", never its span name (a side channel for values).
    assert 'tracepipe_span_duration_seconds_bucket{le="2.5",model="none",operation="other"' in text
    assert "vector_search" not in text
    assert "user" not in "".join(ln for ln in text.splitlines() if ln.startswith("tracepipe_llm"))
