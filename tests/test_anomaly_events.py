"""The alert events both rule engines send (pipeline/anomaly/events.py): summary and identity."""

from __future__ import annotations

import hashlib

from pipeline.anomaly.config import RuleConfig
from pipeline.anomaly.events import alert_event, fingerprint, iso, summary

RULE = RuleConfig(name="cost_spike", metric="cost", kind="relative", threshold=2.0, severity="critical")


def test_summary_reads_the_same_for_every_engine() -> None:
    key = {"service": "chat", "model": ""}
    assert summary("firing", RULE, key, "0.66 (+456% vs baseline 0.1187)", 0.35612, "window a..b") == (
        "[CRITICAL] cost_spike firing for service=chat model=-: cost is 0.66 (+456% vs baseline 0.1187)"
        ", threshold 0.3561 (relative), window a..b"
    )
    assert summary("resolved", RULE, key, "0.1", None, "last 10 scored answers", title="Quality Drop Detected: ") == (
        "[RESOLVED] Quality Drop Detected: cost_spike resolved for service=chat model=-: cost back to 0.1"
        ", threshold - (relative), last 10 scored answers"
    )


def test_event_identity_and_fields() -> None:
    fp = fingerprint("anomaly", "cost_spike", "chat\x1fgpt-4o")
    assert fp == hashlib.sha1(b"anomaly|cost_spike|chat\x1fgpt-4o").hexdigest()[:16]
    assert iso(1_767_225_600_000_000_000) == "2026-01-01T00:00:00Z"
    ev = alert_event(
        "firing", RULE, processor="anomaly", fingerprint=fp, at=7, key={"service": "chat"}, tenant="default",
        window={"index": 7}, observed=1.5, baseline=None, threshold=1.0, detail="", calls=3,
        example_trace_ids=["t"], summary="s", emitted_at="2026-01-01T00:00:00Z",
    )
    assert ev["id"] == f"{fp}:firing:7" and ev["type"] == "anomaly"
    rule_fields = (ev["rule"], ev["severity"], ev["direction"], ev["rule_threshold"])
    assert rule_fields == ("cost_spike", "critical", "above", 2.0)
    assert list(ev)[-2:] == ["summary", "emitted_at"]
