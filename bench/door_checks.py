"""Cost of the receivers' storage checks (`receivers.otlp.storage_checks`) in `sanitize`.

Sanitizes the same requests (1,000 spans of 10 attributes each) with the
checks on and off, interleaved, and prints spans/s of each and their ratio. Figures taken
on a shared machine are noisy: compare the ratio, measured in one run.

    python bench/door_checks.py [--requests 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.otlp.validate import sanitize


def _request(n: int, seed: int) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench")))
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = (seed * 1_000_000 + i // 10 + 1).to_bytes(16, "big")
        sp.span_id = (seed * 1_000_000 + i + 1).to_bytes(8, "big")
        sp.name = "chat gpt-4o"
        sp.start_time_unix_nano, sp.end_time_unix_nano = now + i, now + i + 1_000_000
        for k in range(10):
            sp.attributes.append(KeyValue(key=f"attr.{k}", value=AnyValue(string_value="value")))
        if i % 10 == 0:
            for e in range(2):
                ev = sp.events.add()
                ev.time_unix_nano, ev.name = now + i + e, "tick"
    return req.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bodies = [_request(1000, i) for i in range(args.requests)]
    best = {True: 0.0, False: 0.0}
    for _ in range(args.rounds):
        for checks in (False, True):
            reqs = [ExportTraceServiceRequest.FromString(b) for b in bodies]
            t0 = time.perf_counter()
            for r in reqs:
                sanitize(r, 1000, storage_checks=checks)
            rate = len(reqs) * 1000 / (time.perf_counter() - t0)
            best[checks] = max(best[checks], rate)
    print(f"sanitize without storage checks: {best[False]:,.0f} spans/s (best of {args.rounds})")
    print(f"sanitize with storage checks:    {best[True]:,.0f} spans/s")
    print(f"ratio with/without: {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
