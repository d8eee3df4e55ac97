"""OTLP logs and metrics receivers in the embedded runtime: gRPC and HTTP (protobuf and JSON,
gzip), limits and errors, backpressure, the accepted counters, redaction of log records,
the query-time join of GenAI log events onto their span (both arrival orders), and the
one-warning-per-address answer to gRPC clients on the HTTP port."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading
import time

import aiohttp
import clickhouse_connect
import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, NumberDataPoint
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import build_config
from pipeline.embedded import EmbeddedRuntime
from pipeline.otlp.json_mapping import parse_json_logs_request, parse_json_metrics_request

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
SECRET = "SECRET-314159"
T0 = (time.time_ns() // 10**9 - 600) * 10**9  # recent: inside the TTL


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _span_id(n: int) -> bytes:
    return n.to_bytes(8, "big")


def logs_request(trace: int, span: int, content: str, event: str = "gen_ai.user.message", n: int = 1,
                 service: str = "chat-app") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", service))
    sl = rl.scope_logs.add()
    sl.scope.name = "opentelemetry.instrumentation.openai_v2"
    for i in range(n):
        body = AnyValue(kvlist_value=KeyValueList(values=[_kv("content", content)]))
        sl.log_records.append(
            LogRecord(time_unix_nano=T0 + i, trace_id=_trace_id(trace), span_id=_span_id(span), event_name=event,
                      body=body, attributes=[_kv("gen_ai.system", "openai")], severity_number=9)
        )
    return req


def span_request(trace: int, span: int) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "chat-app"))
    rs.scope_spans.add().spans.append(
        PbSpan(trace_id=_trace_id(trace), span_id=_span_id(span), name="chat gpt-4o", kind=PbSpan.SPAN_KIND_CLIENT,
               start_time_unix_nano=T0, end_time_unix_nano=T0 + 10**9,
               attributes=[_kv("gen_ai.request.model", "gpt-4o"), _kv("gen_ai.operation.name", "chat")])
    )
    return req


def metrics_request(points: int = 3) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="gen_ai.client.operation.count", unit="1")
    for i in range(points):
        m.sum.data_points.append(NumberDataPoint(time_unix_nano=T0 + i, as_int=i, attributes=[_kv("k", str(i))]))
    sm.metrics.append(Metric(name="process.cpu", gauge={"data_points": [{"as_double": 0.5}]}))
    return req


def to_json(msg) -> bytes:
    """OTLP/JSON (hex ids, as the spec and the SDKs write them)."""
    doc = json_format.MessageToDict(msg)
    for rl in doc.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in rec:
                        import base64

                        rec[key] = base64.b64decode(rec[key]).hex()
    return json.dumps(doc).encode()


def metric_value(runtime: EmbeddedRuntime, name: str, **labels: str) -> float:
    body, _ = runtime.telemetry.exposition()
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _config(chdb_dsn: str, database: str, tmp_path, **sink: object) -> object:
    return build_config({
        "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"},
                               "enqueue_timeout": 0.05, "retry_after": 1, "max_spans_per_request": 50,
                               "max_attributes_per_span": 5}},
        "processors": {"normalize": {}, "redact": {"custom_rules": [{"id": "planted", "regex": "SECRET-[0-9]{6}"}]}},
        "sinks": {"clickhouse": {"dsn": chdb_dsn, "database": database, **sink}},
        "service": {"data_dir": str(tmp_path), "api": {"endpoint": None}, "metrics": {"endpoint": None},
                    "batch": {"max_spans": 1000, "timeout": 0.01},
                    "pipelines": {"traces": {"processors": ["normalize", "redact"], "sinks": ["clickhouse"]}}},
    })


@pytest.fixture
async def runtime(chdb_dsn: str, chdb_database: str, tmp_path):
    rt = EmbeddedRuntime(_config(chdb_dsn, chdb_database, tmp_path))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def stored_logs(chdb_dsn: str, database: str) -> list[tuple]:
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    try:
        return list(client.query(
            f"SELECT TraceId, SpanId, EventName, Body, ServiceName, LogAttributes, SeverityNumber "
            f"FROM `{database}`.otel_logs ORDER BY Timestamp, TraceId").result_rows)
    finally:
        client.close()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.read(), dict(r.headers)


async def send_logs(rt: EmbeddedRuntime, how: str, req: ExportLogsServiceRequest) -> ExportLogsServiceResponse:
    ep = rt.endpoints
    if how == "grpc":
        async with grpc.aio.insecure_channel(ep.otlp_grpc) as ch:
            return await logs_service_pb2_grpc.LogsServiceStub(ch).Export(req, compression=grpc.Compression.Gzip)
    if how == "http-json":
        status, body, _ = await post(f"http://{ep.otlp_http}/v1/logs", to_json(req), JS)
        assert status == 200, body
        return json_format.Parse(body, ExportLogsServiceResponse())
    status, body, _ = await post(f"http://{ep.otlp_http}/v1/logs", gzip.compress(req.SerializeToString()),
                                 {**PB, "Content-Encoding": "gzip"})
    assert status == 200, body
    return ExportLogsServiceResponse.FromString(body)


async def send_spans(rt: EmbeddedRuntime, req: ExportTraceServiceRequest) -> None:
    status, body, _ = await post(f"http://{rt.endpoints.otlp_http}/v1/traces", req.SerializeToString(), PB)
    assert status == 200, body


async def wait_trace(rt: EmbeddedRuntime, trace: int, logs: int) -> dict:
    tid = _trace_id(trace).hex()
    for _ in range(300):
        t = await rt.queries.get_trace(tid)
        if t is not None and sum(len(s["logs"]) for s in t["spans"]) >= logs:
            return t
        await asyncio.sleep(0.05)
    raise AssertionError(f"trace {tid} with {logs} log records never appeared")


@pytest.mark.parametrize("how", ["grpc", "http-protobuf", "http-json"])
async def test_logs_are_stored_in_otel_logs_and_counted(runtime, how, chdb_dsn, chdb_database) -> None:
    resp = await send_logs(runtime, how, logs_request(7, 1, "what is our refund policy?", n=2))
    assert not resp.HasField("partial_success")
    rows = stored_logs(chdb_dsn, chdb_database)
    assert len(rows) == 2
    tid, sid, event, body, service, attrs, severity = rows[0]
    assert (tid, sid, event, service, severity) == (_trace_id(7).hex(), _span_id(1).hex(), "gen_ai.user.message",
                                                    "chat-app", 9)
    assert json.loads(body) == {"content": "what is our refund policy?"}
    assert attrs == {"gen_ai.system": "openai"}
    assert metric_value(runtime, "tracepipe_receiver_accepted_log_records_total", receiver="otlp") == 2
    assert metric_value(runtime, "tracepipe_genai_log_records_total", event="gen_ai.user.message") == 2


@pytest.mark.parametrize("how", ["grpc", "http-protobuf", "http-json"])
async def test_metrics_are_acknowledged_and_their_data_points_counted(runtime, how) -> None:
    req = metrics_request(points=3)  # 3 sum points + 1 gauge point
    ep = runtime.endpoints
    if how == "grpc":
        async with grpc.aio.insecure_channel(ep.otlp_grpc) as ch:
            resp = await metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(req)
        assert isinstance(resp, ExportMetricsServiceResponse)
    elif how == "http-json":
        status, body, _ = await post(f"http://{ep.otlp_http}/v1/metrics", json_format.MessageToJson(req).encode(), JS)
        assert status == 200 and json.loads(body) == {}
    else:
        status, body, _ = await post(f"http://{ep.otlp_http}/v1/metrics", req.SerializeToString(), PB)
        assert status == 200 and ExportMetricsServiceResponse.FromString(body) == ExportMetricsServiceResponse()
    assert metric_value(runtime, "tracepipe_receiver_accepted_data_points_total", receiver="otlp") == 4


@pytest.mark.parametrize("order", ["log_first", "span_first"])
async def test_genai_log_event_shows_with_its_span_in_either_arrival_order(runtime, order) -> None:
    logs = logs_request(11, 5, "hello there", event="gen_ai.choice")
    if order == "log_first":
        await send_logs(runtime, "http-protobuf", logs)
        assert await runtime.queries.get_trace(_trace_id(11).hex()) is None  # no span stored yet
        await send_spans(runtime, span_request(11, 5))
    else:
        await send_spans(runtime, span_request(11, 5))
        await wait_trace(runtime, 11, 0)
        await send_logs(runtime, "grpc", logs)
    trace = await wait_trace(runtime, 11, 1)
    (span,) = trace["spans"]
    assert span["span_id"] == _span_id(5).hex()
    (rec,) = span["logs"]
    assert rec["event_name"] == "gen_ai.choice" and json.loads(rec["body"]) == {"content": "hello there"}
    assert trace["logs"] == []


async def test_log_records_are_redacted_before_storage(runtime, chdb_dsn, chdb_database) -> None:
    req = logs_request(12, 6, f"my key is {SECRET}, keep it safe")
    req.resource_logs[0].scope_logs[0].log_records[0].attributes.append(_kv("note", f"token={SECRET}"))
    req.resource_logs[0].resource.attributes.append(_kv("deploy.note", f"resource {SECRET}"))
    await send_logs(runtime, "http-json", req)
    await send_spans(runtime, span_request(12, 6))
    rows = stored_logs(chdb_dsn, chdb_database)
    assert len(rows) == 1
    _tid, _sid, _event, body, _svc, attrs, _sev = rows[0]
    assert SECRET not in body and "[REDACTED:planted:" in body and "keep it safe" in body
    assert SECRET not in attrs["note"] and "[REDACTED:planted:" in attrs["note"]
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    try:
        (res,) = client.query(f"SELECT ResourceAttributes FROM `{chdb_database}`.otel_logs").result_rows[0]
    finally:
        client.close()
    assert res["service.name"] == "chat-app" and res["deploy.note"].startswith("resource [REDACTED:planted:")
    trace = await wait_trace(runtime, 12, 1)
    assert SECRET not in json.dumps(trace)
    assert metric_value(runtime, "tracepipe_redactions_total", processor="redact", type="planted") >= 2


async def test_invalid_log_records_get_partial_success_and_the_rest_is_stored(runtime, chdb_dsn,
                                                                            chdb_database) -> None:
    req = logs_request(13, 7, "fine", n=3)
    records = req.resource_logs[0].scope_logs[0].log_records
    records[1].trace_id = b"\x01\x02"  # neither empty nor 16 bytes
    for i in range(6):  # more than max_attributes_per_span (5)
        records[2].attributes.append(_kv(f"a{i}", "x"))
    for how in ("grpc", "http-protobuf"):
        resp = await send_logs(runtime, how, req)
        assert resp.partial_success.rejected_log_records == 2
        assert "invalid trace id" in resp.partial_success.error_message
        assert "more than 5 attributes" in resp.partial_success.error_message
    rows = stored_logs(chdb_dsn, chdb_database)
    assert len(rows) == 1  # the same accepted record twice: deduplicated by content
    assert metric_value(runtime, "tracepipe_receiver_refused_log_records_total", receiver="otlp",
                        reason="invalid") == 4


async def test_logs_and_metrics_limits_and_errors_answer_like_traces(runtime) -> None:
    ep = runtime.endpoints
    url = f"http://{ep.otlp_http}"
    too_many = logs_request(14, 1, "x", n=51)  # > max_spans_per_request (50)
    status, body, _ = await post(f"{url}/v1/logs", too_many.SerializeToString(), PB)
    assert status == 413 and b"more than max_spans_per_request" in body
    status, _, _ = await post(f"{url}/v1/metrics", metrics_request(points=60).SerializeToString(), PB)
    assert status == 413
    status, body, _ = await post(f"{url}/v1/logs", b"\xff\xff\xff", PB)
    assert status == 400
    status, body, _ = await post(f"{url}/v1/logs", b'{"resourceLogs": [{"scopeLogs": [{"logRecords": '
                                 b'[{"traceId": "zz"}]}]}]}', JS)
    assert status == 400 and b"traceId" in body
    status, _, _ = await post(f"{url}/v1/metrics", b"{not json", JS)
    assert status == 400
    status, _, _ = await post(f"{url}/v1/logs", b"hello", {"Content-Type": "text/plain"})
    assert status == 415
    big = b"\x00" * (runtime.config.receivers["otlp"].config.http.max_body_bytes + 1)
    status, _, _ = await post(f"{url}/v1/logs", big, PB)
    assert status == 413
    async with grpc.aio.insecure_channel(ep.otlp_grpc) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await logs_service_pb2_grpc.LogsServiceStub(ch).Export(too_many)
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        raw = ch.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await raw(b"\xff\xff\xff")
        assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert metric_value(runtime, "tracepipe_receiver_refused_log_records_total", receiver="otlp",
                        reason="too_many_records") == 102


async def test_a_busy_logs_store_answers_retryable_429_and_resource_exhausted(chdb_dsn, chdb_database,
                                                                              tmp_path) -> None:
    rt = EmbeddedRuntime(_config(chdb_dsn, chdb_database, tmp_path, logs_max_pending_requests=1))
    await rt.start()
    release = threading.Event()
    sink = rt.chain.sinks["clickhouse"]
    try:
        # occupy the store's writer thread, so the one pending slot stays taken
        blocker = asyncio.ensure_future(sink.run_with_client(lambda _client: release.wait(30)))
        first = asyncio.ensure_future(send_logs(rt, "http-protobuf", logs_request(15, 1, "first")))
        for _ in range(200):
            if rt.logs_store._pending == 1:
                break
            await asyncio.sleep(0.01)
        status, _, headers = await post(f"http://{rt.endpoints.otlp_http}/v1/logs",
                                        logs_request(15, 2, "second").SerializeToString(), PB)
        assert status == 429 and headers["Retry-After"] == "1"
        async with grpc.aio.insecure_channel(rt.endpoints.otlp_grpc) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await logs_service_pb2_grpc.LogsServiceStub(ch).Export(logs_request(15, 3, "third"))
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        await blocker
        resp = await first
        assert not resp.HasField("partial_success")
        assert metric_value(rt, "tracepipe_receiver_refused_log_records_total", receiver="otlp",
                            reason="queue_full") == 2
    finally:
        release.set()
        await rt.stop()
    assert [r[3] for r in stored_logs(chdb_dsn, chdb_database)] == ['{"content":"first"}']


async def test_grpc_client_on_the_http_port_gets_one_warning_per_address(runtime, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tracepipe.receiver.otlp")
    host, port = runtime.endpoints.otlp_http.rsplit(":", 1)
    for _ in range(3):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await writer.drain()
        answer = await reader.read()  # the server closes after its GOAWAY
        writer.close()
        assert answer[3:4] == b"\x04" and b"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in answer
    async with grpc.aio.insecure_channel(runtime.endpoints.otlp_http) as ch:  # a real gRPC client
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await logs_service_pb2_grpc.LogsServiceStub(ch).Export(logs_request(16, 1, "x"), timeout=3)
        # it reconnects (each attempt gets the GOAWAY) until its deadline, or gives up UNAVAILABLE
        assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    warnings = [r for r in caplog.records if "gRPC (HTTP/2) client" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTLP/gRPC listens on 127.0.0.1:0" in warnings[0].getMessage()  # the configured endpoint
    assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
    assert metric_value(runtime, "tracepipe_receiver_wrong_protocol_connections_total", receiver="otlp",
                        protocol="http2_prior_knowledge") >= 4
    # HTTP/1.1 keeps working on the same port
    status, _, _ = await post(f"http://{runtime.endpoints.otlp_http}/v1/metrics",
                              metrics_request(1).SerializeToString(), PB)
    assert status == 200


def test_http2_guard_remembers_a_bounded_number_of_addresses() -> None:
    from pipeline.config import OtlpReceiverConfig
    from pipeline.receivers.http2_guard import Http2Guard
    from pipeline.telemetry import Telemetry

    class _Receiver:
        receiver_id = "otlp"
        cfg = OtlpReceiverConfig()
        telemetry = Telemetry()

    log = logging.getLogger("test.http2_guard")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    guard = Http2Guard(_Receiver(), log, max_addresses=2)
    for addr in ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.1"]:
        guard.reject((addr, 1234))
    assert len(guard._warned) == 2
    # .1 warned, .2 warned, .3 warned (evicting .1), .1 warned again after eviction
    assert [m.split(" at ")[1].split(" ")[0] for m in seen] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1"]


def test_json_mapping_parses_logs_and_metrics_with_hex_ids() -> None:
    req = logs_request(17, 9, "hi")
    assert parse_json_logs_request(to_json(req)) == req
    m = metrics_request(2)
    assert parse_json_metrics_request(json_format.MessageToJson(m).encode()) == m


GENAI_ATTRS = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
               "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.token.type": "input"}


class _SdkHistogram:
    """gen_ai.client.token.usage recorded by the real metrics SDK, encoded by the OTLP exporter's encoder."""

    def __init__(self, delta: bool) -> None:
        from opentelemetry.sdk.metrics import Histogram, MeterProvider
        from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource

        temporality = {Histogram: AggregationTemporality.DELTA} if delta else {}
        self.reader = InMemoryMetricReader(preferred_temporality=temporality)
        provider = MeterProvider(metric_readers=[self.reader], resource=Resource.create({"service.name": "chat-app"}))
        self.hist = provider.get_meter("opentelemetry.instrumentation.openai_v2").create_histogram(
            "gen_ai.client.token.usage", unit="{token}")

    def export(self, *values: int) -> ExportMetricsServiceRequest:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        for v in values:
            self.hist.record(v, GENAI_ATTRS)
        return encode_metrics(self.reader.get_metrics_data())


@pytest.mark.parametrize("delta", [False, True])
async def test_genai_token_usage_histograms_are_reexposed_without_double_counting(runtime, delta) -> None:
    sdk = _SdkHistogram(delta)
    url = f"http://{runtime.endpoints.otlp_http}/v1/metrics"
    first = sdk.export(100, 200)
    assert (await post(url, first.SerializeToString(), PB))[0] == 200
    if not delta:  # a cumulative export resent (a client retry, or the next period without calls)
        assert (await post(url, first.SerializeToString(), PB))[0] == 200
    assert (await post(url, sdk.export(50).SerializeToString(), PB))[0] == 200
    labels = {"service": "chat-app", "provider": "openai", "model": "gpt-4o-2024-08-06", "operation": "chat",
              "type": "input"}
    assert metric_value(runtime, "tracepipe_genai_client_token_usage_tokens_count", **labels) == 3
    assert metric_value(runtime, "tracepipe_genai_client_token_usage_tokens_sum", **labels) == 350
    # buckets are the instrumentation's bounds, cumulative as Prometheus wants them
    assert metric_value(runtime, "tracepipe_genai_client_token_usage_tokens_bucket", le="+Inf", **labels) == 3
    assert metric_value(runtime, "tracepipe_genai_client_token_usage_tokens_bucket", le="100.0", **labels) == 2


def test_redact_values_redacts_plain_values_and_keeps_their_shapes() -> None:
    from pathlib import Path

    from pipeline.component import ComponentContext
    from pipeline.state import MemoryStateStore
    from pipeline.telemetry import Telemetry
    from processors.redact import RedactConfig, RedactProcessor

    cfg = RedactConfig.model_validate({"custom_rules": [{"id": "planted", "regex": "SECRET-[0-9]{6}"}]})
    ctx = ComponentContext("redact", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("t"))
    proc = RedactProcessor("redact", cfg, ctx)
    values = [f"key {SECRET}", f"raw {SECRET}".encode(), {"content": f"x {SECRET}", "n": 3},
              [f"a {SECRET}", {"deep": f"b {SECRET}"}], 42, None]
    out = proc.redact_values(values)
    assert [type(v) for v in out] == [str, bytes, dict, list, int, type(None)]
    assert SECRET not in repr(out) and repr(out).count("[REDACTED:planted:") == 5
    assert out[2]["n"] == 3 and out[4] == 42
    assert SECRET in values[0]  # the input is not modified
