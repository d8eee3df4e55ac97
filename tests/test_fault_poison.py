"""Fault test: unstorable spans in the middle of good traffic through a real `tracepipe run`.

Two kinds of poison, both refused by ClickHouse for good, arrive among 1,000 good spans:
- a span ending after 2262 (DateTime64(9) cannot hold it). The door check would reject it,
  so this config turns `receivers.otlp.storage_checks` off: it stands for spans that reach
  a sink without the door (a collector feeding Kafka directly);
- a span the operator's own table constraint refuses (ClickHouse 469), fixable later.

Good traffic is stored exactly once, the poison is in the dead-letter store with its
reason (and survives kill -9), `tracepipe dead-letter list` shows it, and after the fix
`tracepipe dead-letter replay --all` stores the fixable span once; the other is refused
again and stays dead-lettered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.otlp_support import pb_request, pb_span
from tests.pipeline_proc import ROOT, PipelineProcess, cli, start_pipeline

TRACES, PER_TRACE = 20, 50
FAR_TRACE, CONSTRAINT_TRACE = 7, 12  # the traces carrying one poison span each
PAST_2262 = 2**63 + 1_000

CONFIG = """\
receivers:
  otlp:
    storage_checks: false
sinks:
  clickhouse:
    ttl_days: null
service:
  retry: {initial_backoff: 0.05, max_backoff: 0.2, max_elapsed: 30}
  batch: {max_spans: 500, timeout: 0.05}
  pipelines:
    traces:
      sinks: [clickhouse]
"""

SCHEMA_WITH_CONSTRAINT = """
import sys
from pipeline.query.store import open_client
from sinks.clickhouse import schema_statements
c = open_client("chdb://" + sys.argv[1])
for stmt in schema_statements("tracepipe", "otel_traces", None):
    c.command(stmt)
if sys.argv[2] == "add":
    c.command("ALTER TABLE tracepipe.otel_traces ADD CONSTRAINT no_poison CHECK SpanName != 'poison-constraint'")
else:
    c.command("ALTER TABLE tracepipe.otel_traces DROP CONSTRAINT no_poison")
c.close()
"""


def _constraint(data_dir: Path, action: str) -> None:
    subprocess.run([sys.executable, "-c", SCHEMA_WITH_CONSTRAINT, str(data_dir / "clickhouse"), action],
                   check=True, cwd=ROOT, timeout=120, capture_output=True)


def _trace_id(t: int) -> bytes:
    return (0xF00D0000 + t).to_bytes(16, "big")


def _request(t: int, now: int) -> bytes:
    spans = []
    for i in range(PER_TRACE + (t in (FAR_TRACE, CONSTRAINT_TRACE))):
        sp = pb_span(i, trace_id=_trace_id(t), span_id=(t * 1000 + i + 1).to_bytes(8, "big"))
        sp.start_time_unix_nano, sp.end_time_unix_nano = now + i, now + i + 1_000_000
        if i == PER_TRACE and t == FAR_TRACE:
            sp.name, sp.end_time_unix_nano = "poison-far", PAST_2262
        elif i == PER_TRACE:
            sp.name = "poison-constraint"
        spans.append(sp)
    return pb_request(spans, service="fault-app").SerializeToString()


def _post(p: PipelineProcess, body: bytes) -> ExportTraceServiceResponse:
    req = urllib.request.Request(p.otlp_http + "/v1/traces", data=body,
                                 headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        return ExportTraceServiceResponse.FromString(r.read())


def _metric(p: PipelineProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in p.metrics().splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(p: PipelineProcess, name: str, want: float, timeout: float = 90, **labels: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _metric(p, name, **labels) >= want:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}{labels} stayed below {want}:\n{p.log()[-3000:]}")


def _stored_spans(p: PipelineProcess, t: int) -> list[str]:
    status, trace = p.get(f"/api/traces/{_trace_id(t).hex()}")
    assert status == 200, trace
    return sorted(s["name"] for s in trace["spans"])


def test_poison_among_good_traffic_is_dead_lettered_good_traffic_stored_once_and_replayed_after_a_fix(
        tmp_path: Path):
    data_dir = tmp_path / "data"
    config = tmp_path / "poison.yaml"
    config.write_text(CONFIG)
    _constraint(data_dir, "add")
    now = time.time_ns()
    p = start_pipeline(data_dir, "-c", str(config))
    try:
        for t in range(TRACES):
            resp = _post(p, _request(t, now))
            assert resp.partial_success.rejected_spans == 0  # the door lets both poisons in here
        _wait(p, "tracepipe_dead_letter_spans_total", 2)
        _wait(p, "tracepipe_sink_sent_spans_total", TRACES * PER_TRACE, sink="clickhouse")
        for t in range(TRACES):
            assert len(_stored_spans(p, t)) == PER_TRACE, t  # every good span, once
        assert _metric(p, "tracepipe_dead_letter_spans_total", sink="clickhouse", reason="overflow") == 1
        assert _metric(p, "tracepipe_dead_letter_spans_total", sink="clickhouse",
                       reason="constraint_violation") == 1
        listed = cli("dead-letter", "list", "--api-url", p.api)
        assert listed.returncode == 0, listed.stderr
        assert "overflow" in listed.stdout and "constraint_violation" in listed.stdout
        # the store is on disk when the entries are counted: kill -9 loses none of them
        p.proc.kill()
        p.proc.wait(30)
    finally:
        p.stop()

    offline = json.loads(cli("dead-letter", "list", "--json", "--data-dir", str(data_dir),
                             "--api", "127.0.0.1:1").stdout)
    entries = {e["reason"]: e for e in offline["entries"]}
    assert set(entries) == {"overflow", "constraint_violation"}
    assert all(e["spans"] == 1 and e["component"] == "clickhouse" and e["status"] == "new"
               for e in entries.values())
    shown = cli("dead-letter", "show", entries["constraint_violation"]["id"], "--data-dir", str(data_dir),
                "--api", "127.0.0.1:1")
    assert "'poison-constraint'" in shown.stdout and "469" in shown.stdout

    _constraint(data_dir, "drop")  # the fix
    p = start_pipeline(data_dir, "-c", str(config))
    try:
        replay = cli("dead-letter", "replay", "--all", "--json", "--api-url", p.api)
        result = json.loads(replay.stdout)
        assert (result["entries"], result["stored"], result["dead_lettered_again"]) == (2, 1, 1)
        assert replay.returncode == 1  # something was refused again
        assert _stored_spans(p, CONSTRAINT_TRACE).count("poison-constraint") == 1
        again = cli("dead-letter", "replay", entries["constraint_violation"]["id"], "--api-url", p.api)
        assert again.returncode == 0, again.stdout + again.stderr
        assert _stored_spans(p, CONSTRAINT_TRACE).count("poison-constraint") == 1  # replaying twice stores once
        assert len(_stored_spans(p, CONSTRAINT_TRACE)) == PER_TRACE + 1
        assert "poison-far" not in _stored_spans(p, FAR_TRACE)
        after = json.loads(cli("dead-letter", "list", "--json", "--api-url", p.api).stdout)
        by_status = sorted((e["reason"], e["status"]) for e in after["entries"])
        assert by_status == [("constraint_violation", "replayed"), ("overflow", "failed_again"), ("overflow", "new")]
    finally:
        assert p.stop() == 0
