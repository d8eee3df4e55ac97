"""Page speed of the web UI on a large store: the API answers behind each UI page, with N stored spans.

Fills a fresh data directory with `--spans` spans (default 1 M: traces of 5 spans, a RAG-style
tree root -> retrieve, agent -> chat (LLM, priced, with a 1 KB prompt attribute), tool; spread
over the last 7 days; 5 000 users, sessions of 4 turns) plus one 200-span trace, by
INSERT ... SELECT straight into chDB (the schema is the clickhouse sink's own: a first `tracepipe run`
creates it), then starts a real `tracepipe run` on that directory and times the API requests each
UI page makes (the page's figure is the time until its data is in; the browser's own rendering
is not included). Prints median and max of `--repeat` runs after one warm-up.

    python -m bench.ui_pages                 # 1 M spans
    python -m bench.ui_pages --spans 200000  # quicker

Figures come from a shared machine (2 cores, other work running): read them as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.pipeline_proc import start_pipeline

SPANS_PER_TRACE = 5
BIG_TRACE = "b" * 32
BIG_SPANS = 200
MODELS = "['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku-latest', 'claude-sonnet-4-5']"


def _span_id(expr: str) -> str:
    return f"substring(lower(hex(MD5(concat('s', toString({expr}))))), 1, 16)"


def _insert_sql(table: str, n_spans: int, offset: int, now_ms: int) -> str:
    """n_spans spans of 5-span traces starting at span number `offset` (numbers are global ids)."""
    n = f"(number + {offset})"
    i = f"intDiv({n}, {SPANS_PER_TRACE})"
    k = f"({n} % {SPANS_PER_TRACE})"
    root = f"({n} - {k})"
    llm = f"{k} = 3"
    return f"""
INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ResourceAttributes,
    ScopeName, SpanAttributes, Duration, StatusCode, GenAiProvider, GenAiOperation, RequestModel, ResponseModel,
    InputTokens, OutputTokens, CostUsd, UserId, SessionId, Feature, TenantId)
SELECT
    fromUnixTimestamp64Milli(toInt64({now_ms} - {i} * 3000 + {k} * 40)) AS Timestamp,
    lower(hex(MD5(toString({i})))) AS TraceId,
    {_span_id(n)} AS SpanId,
    multiIf({k} = 0, '', {k} <= 2, {_span_id(root)}, {_span_id(f"{root} + 2")}) AS ParentSpanId,
    ['handle /chat', 'retrieve', 'agent.plan', 'chat', 'execute_tool lookup'][{k} + 1] AS SpanName,
    if({k} = 0, 'Server', if({llm}, 'Client', 'Internal')) AS SpanKind,
    ['chat-api', 'rag-worker', 'support-bot', 'search'][{i} % 4 + 1] AS ServiceName,
    map('service.name', ServiceName) AS ResourceAttributes,
    'bench' AS ScopeName,
    if({llm}, map('gen_ai.operation.name', 'chat', 'gen_ai.request.model', {MODELS}[{i} % 4 + 1],
                  'gen_ai.input.messages',
                  concat('[{{"role":"user","content":"', repeat('refund policy ', 70), '"}}]')),
        map('step', toString({k}))) AS SpanAttributes,
    toUInt64([2000, 150, 1700, 1200, 90][{k} + 1] * 1000000 + ({i} % 97) * 1000000) AS Duration,
    if({k} = 4 AND {i} % 50 = 0, 'Error', 'Unset') AS StatusCode,
    if({llm}, if({i} % 4 < 2, 'openai', 'anthropic'), '') AS GenAiProvider,
    if({llm}, 'chat', '') AS GenAiOperation,
    if({llm}, {MODELS}[{i} % 4 + 1], '') AS RequestModel,
    RequestModel AS ResponseModel,
    if({llm}, 1000 + {i} % 500, 0) AS InputTokens,
    if({llm}, 200 + {i} % 100, 0) AS OutputTokens,
    if({llm}, (1000 + {i} % 500) * 0.00000015 + (200 + {i} % 100) * 0.0000006, NULL) AS CostUsd,
    concat('u-', toString({i} % 5000)) AS UserId,
    concat('sess-', toString(intDiv({i}, 4))) AS SessionId,
    ['chat', 'summarize', 'search', 'support'][{i} % 4 + 1] AS Feature,
    'default' AS TenantId
FROM numbers({n_spans})"""


def _big_trace_sql(table: str, now_ms: int) -> str:
    """One trace of BIG_SPANS spans: a ternary tree, every 4th span an LLM call."""
    return f"""
INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, ScopeName,
    SpanAttributes, Duration, StatusCode, RequestModel, InputTokens, OutputTokens, CostUsd, UserId, SessionId,
    TenantId)
SELECT fromUnixTimestamp64Milli(toInt64({now_ms} - 60000 + number * 20)), '{BIG_TRACE}',
    substring(lower(hex(MD5(concat('big', toString(number))))), 1, 16),
    if(number = 0, '', substring(lower(hex(MD5(concat('big', toString(intDiv(number - 1, 3)))))), 1, 16)),
    if(number % 4 = 3, 'chat', concat('step ', toString(number))), 'Internal', 'agent', 'bench',
    map('step', toString(number)), toUInt64(greatest(1, 10000 - number * 45) * 1000000), 'Unset',
    if(number % 4 = 3, 'gpt-4o-mini', ''), if(number % 4 = 3, 800, 0), if(number % 4 = 3, 150, 0),
    if(number % 4 = 3, 0.0002, NULL), 'u-big', 'sess-big', 'default'
FROM numbers({BIG_SPANS})"""


def _fill(data_dir: str, n_spans: int, chunk: int) -> None:
    from pipeline.query.store import default_dsn, open_client

    client = open_client(default_dsn(data_dir))
    table = "`tracepipe`.`otel_traces`"
    now_ms = time.time_ns() // 1_000_000
    t0 = time.perf_counter()
    for offset in range(0, n_spans, chunk):
        client.command(_insert_sql(table, min(chunk, n_spans - offset), offset, now_ms))
    client.command(_big_trace_sql(table, now_ms))
    client.command("OPTIMIZE TABLE `tracepipe`.`otel_traces_trace_summary` FINAL")
    stored = client.query("SELECT count() FROM `tracepipe`.`otel_traces`").result_rows[0][0]
    print(f"stored {stored:,} spans in {time.perf_counter() - t0:.1f} s")
    client.close()


def _get(api: str, path: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(api + path, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t0, json.loads(body) if body.startswith((b"{", b"[")) else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans in 5-span traces (plus one 200-span trace)")
    ap.add_argument("--chunk", type=int, default=250_000, help="spans per INSERT")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per page (after one warm-up)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracepipe-ui-bench-") as tmp:
        data = Path(tmp) / "data"
        start_pipeline(data).stop()  # the sink creates its schema
        # chDB holds its directory per process: fill it from a child process, then serve it.
        proc = multiprocessing.get_context("spawn").Process(target=_fill, args=(str(data), args.spans, args.chunk))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"filling the store failed (exit {proc.exitcode})")
        p = start_pipeline(data)
        try:
            _, first = _get(p.api, "/api/traces?limit=50")
            cursor = first["next"]
            small = first["traces"][0]["trace_id"]
            pages = {
                "traces list (newest 50)": ["/api/traces?limit=50"],
                "traces list, next page (cursor)": [f"/api/traces?limit=50&cursor={cursor}"],
                "traces list, model filter": ["/api/traces?limit=50&model=gpt-4o"],
                "traces list, user filter": ["/api/traces?limit=50&user=u-42"],
                "traces list, status=error, 24h": ["/api/traces?limit=50&status=error&since=24h"],
                "traces list, min_cost": ["/api/traces?limit=50&min_cost=0.0004"],
                "trace, 5 spans": [f"/api/traces/{small}"],
                f"trace, {BIG_SPANS} spans": [f"/api/traces/{BIG_TRACE}"],
                "session (4 turns)": ["/api/sessions/sess-1000"],
                "sessions list (24h, the page's default)": ["/api/sessions?since=24h&limit=100"],
                "sessions list (7d)": ["/api/sessions?since=7d&limit=100"],
                "user (30d, per day)": ["/api/users/u-42?since=30d&interval=day&limit=50"],
                "cost overview (24h: spend + 5 dimensions)": [
                    "/api/analytics/spend?since=24h&interval=hour",
                    *[f"/api/analytics/cost?by={by}&since=24h" for by in ("model", "feature", "user", "tenant",
                                                                           "service")]],
                "ui page + scripts (static)": ["/ui", "/ui/static/app.js", "/ui/static/dom.js"],
            }
            big = _get(p.api, f"/api/traces/{BIG_TRACE}")[1]
            assert big["totals"]["spans"] == BIG_SPANS, big.get("totals")
            print(f"{'page':45} {'median':>9} {'max':>9}  (seconds; requests made one after another)")
            for name, paths in pages.items():
                times = []
                for run in range(args.repeat + 1):
                    total = sum(_get(p.api, path)[0] for path in paths)
                    if run:
                        times.append(total)
                print(f"{name:45} {statistics.median(times):9.3f} {max(times):9.3f}")
        finally:
            p.stop()


if __name__ == "__main__":
    main()
