"""A bounded run of bench/fuzz_receivers.py against a real `tracepipe run`: 2,000 mutated
OTLP payloads over HTTP (protobuf, JSON, gzip, deflate, bad content types, truncated
bodies) and gRPC get no 5xx and no hang, leave no traceback in the log, and the pipeline
is still ready and still stores a good span afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.fuzz_receivers import ROOT, run_fuzz, start_pipeline


def test_two_thousand_fuzzed_payloads_get_no_5xx_and_leave_the_pipeline_healthy(tmp_path: Path) -> None:
    pipe = start_pipeline(str(ROOT), [])
    try:
        report = run_fuzz(pipe, 2000, seed=20261201, concurrency=4, out=tmp_path / "failures")
    finally:
        pipe.stop()
        shutil.rmtree(pipe.tmp, ignore_errors=True)
    summary = report.text(2000)
    assert report.flagged == [], summary
    assert report.tracebacks == 0, summary
    assert report.ready_after and report.stores_after, summary
    statuses = {s for (_, s) in report.counts}
    # the run exercised acceptance and each kind of refusal on both receivers
    assert {"200", "400", "415", "OK", "INVALID_ARGUMENT"} <= statuses, summary
    assert sum(report.counts.values()) == 2000
