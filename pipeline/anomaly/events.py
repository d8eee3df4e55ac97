"""The alert events of rule engines (type "anomaly"): one shape for the anomaly and quality processors.

Both processors judge windows with pipeline/anomaly/rules.py and send each firing and
resolution through `ctx.emit_event("anomaly", event)` to the alert path (pipeline/alerts),
which reads these fields; they differ only in what a window is (time vs count of results),
how the observation reads in the summary and what they pass as baseline and examples.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Protocol

EVENT_KIND = "anomaly"


class AlertRule(Protocol):
    """What an event takes from a rule (pipeline/anomaly/config.py RuleConfig, processors/quality.py's)."""

    @property
    def name(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def threshold(self) -> float: ...


def iso(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC with a Z."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def fmt(v: float | None) -> str:
    """A value in a summary: 4 significant digits, "-" for none."""
    return "-" if v is None else f"{v:.4g}"


def fingerprint(*parts: str) -> str:
    """The alert's identity (the same for its firing and resolution): parts joined by "|", hashed."""
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def summary(
    state: str, rule: AlertRule, key: dict[str, str], observed: str, threshold: float | None, context: str,
    title: str = "",
) -> str:
    """`[SEVERITY|RESOLVED] <title><rule> <state> for d=v ...: <metric> is|back to <observed>,
    threshold <threshold> (<kind>), <context>`."""
    tag = "RESOLVED" if state == "resolved" else rule.severity.upper()
    verb = "is" if state == "firing" else "back to"
    key_text = " ".join(f"{d}={v or '-'}" for d, v in key.items())
    return (
        f"[{tag}] {title}{rule.name} {state} for {key_text}: {rule.metric} {verb} {observed}"
        f", threshold {fmt(threshold)} ({rule.kind}), {context}"
    )


def alert_event(
    state: str,
    rule: AlertRule,
    *,
    processor: str,
    fingerprint: str,
    at: int,
    key: dict[str, str],
    tenant: str,
    window: dict[str, Any],
    observed: float | None,
    baseline: dict[str, Any] | None,
    threshold: float | None,
    detail: str,
    calls: int,
    example_trace_ids: list[str],
    summary: str,
    emitted_at: str,
) -> dict[str, Any]:
    """The event, its id `<fingerprint>:<state>:<at>` (`at`: the window's end, or its number)."""
    return {
        "type": EVENT_KIND,
        "id": f"{fingerprint}:{state}:{at}",
        "fingerprint": fingerprint,
        "state": state,
        "processor": processor,
        "rule": rule.name,
        "metric": rule.metric,
        "kind": rule.kind,
        "direction": rule.direction,
        "severity": rule.severity,
        "key": key,
        "tenant": tenant,
        "window": window,
        "observed": observed,
        "baseline": baseline,
        "threshold": threshold,
        "rule_threshold": rule.threshold,
        "detail": detail,
        "calls": calls,
        "example_trace_ids": example_trace_ids,
        "summary": summary,
        "emitted_at": emitted_at,
    }
