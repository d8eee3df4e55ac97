"""Fault test: a sink that stalls, then recovers, under a real `tracepipe run`.

The budgets sink's Redis is killed (-9) in the middle of the traffic and started again on
the same port and data (appendfsync always) a little later. While it is away the budgets
sink fails retryably, the chain retries it alone within `service.retry`'s budget, the queue
fills and clients are told to retry (429). After it is back: every span is stored once in
ClickHouse, counted once in the budget, and nothing was dead-lettered.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.otlp_support import kv, pb_request, pb_span
from tests.pipeline_proc import PipelineProcess, cli, start_pipeline
from tests.services.redis import start_local_redis

REQUESTS, PER_REQUEST = 30, 20
TOKENS_PER_SPAN = 1500


def _config(redis_url: str) -> str:
    return f"""\
sinks:
  clickhouse:
    ttl_days: null
  budgets:
    redis: {{url: "{redis_url}", socket_timeout: 0.5, connect_timeout: 0.5}}
    key_prefix: stall
    unavailable: block
    budgets:
      user_daily: {{scope: user, period: day, limit: {{tokens: 100000000}}}}
transport:
  memory: {{capacity_spans: 200}}
service:
  retry: {{initial_backoff: 0.05, max_backoff: 0.2, max_elapsed: 120}}
  batch: {{max_spans: 100, timeout: 0.05}}
  pipelines:
    traces:
      sinks: [clickhouse, budgets]
"""


def _request(r: int, now: int) -> bytes:
    spans = []
    for i in range(PER_REQUEST):
        sp = pb_span(i, trace_id=(0xABC0000 + r).to_bytes(16, "big"), span_id=(r * 100 + i + 1).to_bytes(8, "big"))
        sp.start_time_unix_nano, sp.end_time_unix_nano = now + i, now + i + 1_000_000
        sp.attributes.extend([kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", "gpt-4o-mini"),
                              kv("gen_ai.usage.input_tokens", 1000), kv("gen_ai.usage.output_tokens", 500),
                              kv("user.id", "stall-user")])
        spans.append(sp)
    return pb_request(spans, service="stall-app").SerializeToString()


def _send(p: PipelineProcess, body: bytes, deadline: float, on_refused) -> int:  # type: ignore[no-untyped-def]
    """POST until accepted, honouring 429/503 as an OTLP client does; the number of retries."""
    retries = 0
    while time.monotonic() < deadline:
        req = urllib.request.Request(p.otlp_http + "/v1/traces", data=body,
                                     headers={"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
                return retries
        except urllib.error.HTTPError as e:
            assert e.code in (429, 503), e.code
            retries += 1
            on_refused()
            time.sleep(0.1)
    raise AssertionError("request never accepted")


def _metric(p: PipelineProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in p.metrics().splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_sink_that_stalls_and_recovers_loses_nothing_dead_letters_nothing_and_counts_once(tmp_path: Path):
    redis = start_local_redis(appendonly=True)
    config = tmp_path / "stall.yaml"
    config.write_text(_config(redis.url))
    p = start_pipeline(tmp_path / "data", "-c", str(config))
    restarted = None
    try:
        now = time.time_ns()
        deadline = time.monotonic() + 180
        client_retries = 0

        def restart_once_stalled() -> None:
            # Redis comes back once the stall is seen: the sink failed repeatedly and the queue is full.
            nonlocal restarted
            if restarted is None and _metric(p, "tracepipe_sink_retries_total", sink="budgets") >= 5:
                restarted = start_local_redis(redis.port, redis.workdir, appendonly=True)

        for r in range(REQUESTS):
            if r == REQUESTS // 3:
                redis.process.kill()
                redis.process.wait(10)
            client_retries += _send(p, _request(r, now), deadline, restart_once_stalled)
        assert restarted is not None  # the stall did fill the queue
        total = REQUESTS * PER_REQUEST
        while time.monotonic() < deadline:
            if _metric(p, "tracepipe_pipeline_spans_total", pipeline="traces") >= total:
                break
            time.sleep(0.2)
        assert _metric(p, "tracepipe_pipeline_spans_total", pipeline="traces") == total
        assert client_retries > 0  # the queue filled while the sink was away: clients were told to retry
        assert _metric(p, "tracepipe_dead_letter_spans_total") == 0
        for r in range(REQUESTS):
            status, trace = p.get(f"/api/traces/{(0xABC0000 + r):032x}")
            assert status == 200 and len(trace["spans"]) == PER_REQUEST, r
        shown = cli("budgets", "show", "user", "stall-user", "--json", "--api-url", p.api, "-c", str(config))
        assert shown.returncode == 0, shown.stderr
        (day,) = json.loads(shown.stdout)["budgets"]
        assert (day["spans"], day["spent_tokens"]) == (total, total * TOKENS_PER_SPAN)
        listed = cli("dead-letter", "list", "--api-url", p.api)
        assert "no dead letters" in listed.stdout
    finally:
        p.stop()
        for svc in (redis, restarted):
            if svc is not None:
                svc.stop()
