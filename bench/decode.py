"""OTLP decode throughput on one core: protobuf parse, and protobuf -> pipeline.spans.Span.

Requests come from bench/workload.py: RAG-style traces of 3 spans (root, retrieval, LLM
call), ten attributes per span, the LLM span carrying a prompt and completion of a few KB.
Prints spans/s for protobuf parse alone, decode alone, the sanitize pass the receivers
run, and OTLP/JSON parse (hex ids; json.loads + the mapping into protobuf).

    python bench/decode.py [--requests 40] [--traces-per-request 170] [--prompt-bytes 2000]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import make_request
from pipeline.otlp.decode import decode_request
from pipeline.otlp.json_mapping import parse_json_request
from pipeline.otlp.validate import count_spans, sanitize_request


def _best_of(rounds: int, fn) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON body of a request (proto3 JSON with hex ids)."""
    doc = json_format.MessageToDict(req)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
    return json.dumps(doc).encode()


def one_resource(req: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """The same spans under one ResourceSpans/ScopeSpans, as an SDK's batch exporter sends them
    (the workload puts each trace under its own resource)."""
    out = ExportTraceServiceRequest()
    rs = out.resource_spans.add()
    rs.resource.CopyFrom(req.resource_spans[0].resource)
    ss = rs.scope_spans.add()
    ss.scope.CopyFrom(req.resource_spans[0].scope_spans[0].scope)
    for r in req.resource_spans:
        for s in r.scope_spans:
            ss.spans.extend(s.spans)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--traces-per-request", type=int, default=170, help="3 spans per trace (170 -> 510 spans)")
    ap.add_argument("--prompt-bytes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    payloads = [
        make_request(args.traces_per_request, seed=i, prompt_bytes=args.prompt_bytes).SerializeToString()
        for i in range(args.requests)
    ]
    requests = [ExportTraceServiceRequest.FromString(p) for p in payloads]
    spans = sum(count_spans(r) for r in requests)
    mb = sum(len(p) for p in payloads) / 1e6
    print(f"{args.requests} requests, {spans} spans, {mb:.1f} MB protobuf ({mb * 1e6 / spans:.0f} B/span)")

    parse = _best_of(args.rounds, lambda: [ExportTraceServiceRequest.FromString(p) for p in payloads])
    decode = _best_of(args.rounds, lambda: [decode_request(r) for r in requests])
    sanitize = _best_of(args.rounds, lambda: [sanitize_request(r, 1000) for r in requests])
    sdk_shaped = [one_resource(r) for r in requests]
    decode_sdk = _best_of(args.rounds, lambda: [decode_request(r) for r in sdk_shaped])
    bodies = [otlp_json(r) for r in requests[:5]]
    json_spans = sum(count_spans(r) for r in requests[:5])
    assert parse_json_request(bodies[0]) == requests[0]
    json_parse = _best_of(args.rounds, lambda: [parse_json_request(b) for b in bodies])
    both = parse + decode
    print(f"parse (upb)          {spans / parse:>12,.0f} spans/s/core")
    print(f"decode (-> Span)     {spans / decode:>12,.0f} spans/s/core")
    print(f"decode, SDK-shaped   {spans / decode_sdk:>12,.0f} spans/s/core  (one resource per request)")
    print(f"sanitize (receiver)  {spans / sanitize:>12,.0f} spans/s/core")
    print(f"parse + decode       {spans / both:>12,.0f} spans/s/core")
    print(f"OTLP/JSON parse      {json_spans / json_parse:>12,.0f} spans/s/core")


if __name__ == "__main__":
    main()
