"""Secrets planted in every place an OTLP span carries text, sent to a real `tracepipe run` with
the SHIPPED DEFAULT config: none is found in the stored rows (the query API, `traces show
--json`, every column of every table read straight from chDB after stop), in the process's
log output at debug level, or on /metrics; the masked markers are there instead."""

from __future__ import annotations

import base64
import html
import json
import random
import string
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.pipeline_proc import ROOT, cli, start_pipeline

T0 = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000
ALNUM = string.ascii_letters + string.digits


def _tail(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALNUM) for _ in range(n - 2)) + rng.choice(string.digits) + rng.choice("abcXYZ")


_MAKERS = (
    lambda r: "sk-proj-" + _tail(r, 48),
    lambda r: "sk-ant-api03-" + _tail(r, 60) + "AA",
    lambda r: "ghp_" + _tail(r, 36),
    lambda r: "AKIA" + "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
    lambda r: "AIza" + _tail(r, 35),
    lambda r: "gsk_" + _tail(r, 52),
    lambda r: "hf_" + _tail(r, 34),
    lambda r: "glpat-" + _tail(r, 20),
    lambda r: "xoxb-" + str(r.randrange(10**11, 10**12)) + "-" + _tail(r, 24),
    lambda r: "sk_live_" + _tail(r, 24),
    lambda r: "pplx-" + _tail(r, 48),
)

LOCATIONS = (
    "span_name", "event_name", "attribute_key", "nested_key", "scope_name", "scope_version", "trace_state",
    "status_message", "link_attribute", "link_trace_state", "resource_attribute", "service_name", "bytes_value",
    "nested_value", "model_attribute", "event_attribute", "zero_width_in_key", "json_unicode_escape",
    "percent_encoding", "html_entity", "base64_whole",
)  # fmt: skip


def _kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=_any(value))


def _any(value: Any) -> AnyValue:
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=value)


def _plant(rng: random.Random) -> tuple[ExportTraceServiceRequest, str, dict[str, list[str]]]:
    """One trace with a distinct secret in each location; (request, trace id, location -> needles).

    A needle is a text that would show the secret survived: the secret, its random tail (which
    every disguise here leaves readable), the hex of both (bytes are stored as hex), and for
    base64 the encoded value itself."""
    secrets = {where: _MAKERS[i % len(_MAKERS)](rng) for i, where in enumerate(LOCATIONS)}
    needles: dict[str, list[str]] = {}
    for where, s in secrets.items():
        needles[where] = [s, s[-14:], s.encode().hex(), s[-14:].encode().hex()]
    trace_id = rng.randbytes(16)

    def sid() -> bytes:
        return rng.randbytes(8)

    s = secrets
    zw = s["zero_width_in_key"][:7] + "\u200b" + s["zero_width_in_key"][7:]
    esc = s["json_unicode_escape"]
    escaped = f"\\u{ord(esc[0]):04x}{esc[1:]}"  # the first character as a JSON \\u escape
    messages = '[{"role": "user", "parts": [{"type": "text", "content": "my key is ' + escaped + '"}]}]'
    pct = s["percent_encoding"]
    b64 = base64.b64encode(f"token: {s['base64_whole']}".encode()).decode()
    needles["base64_whole"].append(b64)
    root_id, llm_id = sid(), sid()
    root = PbSpan(
        trace_id=trace_id, span_id=root_id, name=f"handle {s['span_name']}", kind=PbSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=T0, end_time_unix_nano=T0 + 2_000_000_000,
        trace_state=f"vendor={s['trace_state']}",
        attributes=[
            _kv(s["attribute_key"], "value"),
            _kv("tool.args", {"opts": {s["nested_key"]: 1}}),
            _kv("payload", f"raw {s['bytes_value']}".encode()),
            _kv("notes", ["first", {"deep": f"key {s['nested_value']}"}]),
            _kv(zw, "zero-width key"),
            _kv("redirect.url", "https://app.example/cb?k=%" + f"{ord(pct[0]):02X}" + urllib.parse.quote(pct[1:])),
            _kv("page.html", f"<p>key &#{ord(s['html_entity'][0])};{html.escape(s['html_entity'][1:])}</p>"),
            _kv("blob", b64),
        ],
        events=[
            PbSpan.Event(time_unix_nano=T0 + 1, name=f"seen {s['event_name']}",
                         attributes=[_kv("content", f"the key {s['event_attribute']} leaked")]),
        ],
        links=[
            PbSpan.Link(trace_id=rng.randbytes(16), span_id=sid(), trace_state=f"v={s['link_trace_state']}",
                        attributes=[_kv("why", f"retry with {s['link_attribute']}")]),
        ],
        status=Status(code=Status.STATUS_CODE_ERROR, message=f"auth failed for {s['status_message']}"),
    )
    llm = PbSpan(
        trace_id=trace_id, span_id=llm_id, parent_span_id=root_id, name="chat", kind=PbSpan.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0 + 10, end_time_unix_nano=T0 + 1_000_000_000,
        attributes=[
            _kv("gen_ai.system", "openai"),
            _kv("gen_ai.operation.name", "chat"),
            _kv("model", s["model_attribute"]),  # normalize copies it onto gen_ai.request.model
            _kv("gen_ai.usage.input_tokens", 120),
            _kv("gen_ai.usage.output_tokens", 30),
            _kv("gen_ai.input.messages", messages),
        ],
    )
    resource_attrs = [_kv("service.name", f"svc {s['service_name']}"),
                      _kv("deployment.notes", f"deploy key {s['resource_attribute']}")]
    req = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": resource_attrs},
        scope_spans=[ScopeSpans(scope={"name": f"lib {s['scope_name']}", "version": s["scope_version"]},
                                spans=[root, llm])],
    )])  # fmt: skip
    return req, trace_id.hex(), needles


_DUMP = r"""
import json, sys
import clickhouse_connect
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
out = {}
for (name,) in c.query("SELECT name FROM system.tables WHERE database = 'tracepipe'").result_rows:
    rows = c.query(f"SELECT * FROM tracepipe.`{name}`").result_rows
    out[name] = [[repr(v) if isinstance(v, bytes) else v for v in r] for r in rows]
print(json.dumps(out, default=str, ensure_ascii=False))
"""


def _strings(obj: Any) -> str:
    """Every key and string value of parsed JSON, unescaped, one per line."""
    out: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                out.append(str(k))
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif o is not None:
            out.append(str(o))

    walk(obj)
    return "\n".join(out)


def _found(needles: dict[str, list[str]], text: str) -> list[str]:
    return [where for where, ns in needles.items() if any(n in text for n in ns)]


def test_secrets_in_every_location_reach_no_row_log_or_metric_with_the_default_config(tmp_path: Path) -> None:
    req, trace_id, needles = _plant(random.Random(2026))
    p = start_pipeline(tmp_path / "data", "--log-level", "debug")
    try:
        post = urllib.request.Request(f"{p.otlp_http}/v1/traces", data=req.SerializeToString(),
                                      headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(post, timeout=10) as r:
            assert r.status == 200
        deadline = time.monotonic() + 30
        body: Any = None
        while time.monotonic() < deadline:
            status, body = p.get(f"/api/traces/{trace_id}")
            if status == 200 and len(body["spans"]) == 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"trace did not arrive:\n{p.log()[-3000:]}")
        shown = cli("traces", "show", trace_id, "--api-url", p.api, "--json")
        assert shown.returncode == 0, shown.stderr
        metrics = p.metrics()
    finally:
        assert p.stop() == 0, p.log()[-3000:]
    dumped = subprocess.run([sys.executable, "-c", _DUMP, str(p.data_dir / "clickhouse")], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert dumped.returncode == 0, dumped.stderr
    tables = json.loads(dumped.stdout)
    assert any(rows for rows in tables.values()), tables.keys()
    log = p.log()
    api_text, cli_text, rows_text = _strings(body), _strings(json.loads(shown.stdout)), _strings(tables)
    assert _found(needles, api_text) == []
    assert _found(needles, cli_text) == []
    assert _found(needles, rows_text) == []
    assert _found(needles, log) == []
    assert _found(needles, metrics) == []
    # The markers stand where the secrets stood.
    spans = {s["span_id"]: s for s in body["spans"]}
    root = next(s for s in spans.values() if not s["parent_span_id"])
    llm = next(s for s in spans.values() if s["parent_span_id"])
    assert root["name"].startswith("handle [REDACTED:")
    assert llm["attributes"]["gen_ai.request.model"].startswith("[REDACTED:")
    assert "[REDACTED:" in llm["attributes"]["gen_ai.input.messages"]
    assert rows_text.count("[REDACTED:") >= len(LOCATIONS)
    assert 'service="svc [REDACTED:' in metrics and 'operation="chat"' in metrics
    assert "no price for model '[REDACTED:" in log  # the unpriced model, shown redacted
