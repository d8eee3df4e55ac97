"""Synthetic span streams of known shape for the anomaly tests and bench/anomaly.py.

`steady_stream` yields batches of spans for a set of keys with realistic noise: Poisson
call counts per window, lognormal latencies, gamma-distributed token counts, a small
error rate. `spike` multiplies cost (and optionally latency/errors) in chosen windows.
Everything is seeded: a stream is the same on every run.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.component import ComponentContext
from pipeline.spans import STATUS_ERROR, STATUS_OK, Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore, StateStore
from pipeline.telemetry import Telemetry

NS = 1_000_000_000
T0 = 1_767_225_600 * NS  # 2026-01-01T00:00:00Z


@dataclass
class ManualClock:
    """A wall clock the test moves by hand (seconds)."""

    now: float = T0 / NS

    def __call__(self) -> float:
        return self.now


@dataclass
class Collected:
    events: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, kind: str, event: dict[str, Any]) -> None:
        assert kind == "anomaly"
        self.events.append(event)

    def of(self, state: str, rule: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["state"] == state and (rule is None or e["rule"] == rule)]


def context(state: StateStore | None = None, telemetry: Telemetry | None = None) -> ComponentContext:
    return ComponentContext(
        component_id="anomaly",
        telemetry=telemetry or Telemetry(),
        state=state if state is not None else MemoryStateStore(),
        data_dir=Path("."),
        logger=logging.getLogger("test.anomaly"),
    )


@dataclass
class KeyProfile:
    service: str
    model: str
    calls_per_window: float = 60.0  # Poisson mean
    cost_per_call: float = 0.002  # mean USD; per-call cost varies with tokens
    latency_ms: float = 800.0  # lognormal median
    latency_sigma: float = 0.35
    input_tokens: float = 600.0  # gamma mean
    error_rate: float = 0.01


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth for small means, normal approximation for large ones
    if lam < 30:
        limit, k, p = 2.718281828459045 ** (-lam), 0, 1.0
        while True:
            p *= rng.random()
            if p <= limit:
                return k
            k += 1
    return max(0, round(rng.gauss(lam, lam**0.5)))


def window_spans(
    rng: random.Random,
    profile: KeyProfile,
    start_ns: int,
    window_ns: int,
    *,
    cost_factor: float = 1.0,
    latency_factor: float = 1.0,
    error_rate: float | None = None,
    token_factor: float = 1.0,
    resource: Resource | None = None,
) -> list[Span]:
    res = resource or Resource({"service.name": profile.service})
    err = profile.error_rate if error_rate is None else error_rate
    out = []
    for _ in range(_poisson(rng, profile.calls_per_window)):
        end = start_ns + int(rng.random() * window_ns)
        dur = int(rng.lognormvariate(0, profile.latency_sigma) * profile.latency_ms * latency_factor * 1e6)
        tin = int(rng.gammavariate(4.0, profile.input_tokens * token_factor / 4.0)) + 1
        tout = int(rng.gammavariate(3.0, 60.0)) + 1
        cost = profile.cost_per_call * (tin / profile.input_tokens) * cost_factor
        tid = f"{rng.getrandbits(128):032x}"
        out.append(
            Span(
                tid,
                f"{rng.getrandbits(64):016x}",
                "chat",
                end - dur,
                end,
                kind=3,
                resource=res,
                status_code=STATUS_ERROR if rng.random() < err else STATUS_OK,
                attributes={
                    "gen_ai.request.model": profile.model,
                    "gen_ai.operation.name": "chat",
                    "gen_ai.usage.input_tokens": tin,
                    "gen_ai.usage.output_tokens": tout,
                    "gen_ai.usage.cost_usd": cost,
                },
            )
        )
    out.sort(key=lambda s: s.end_ns)
    return out


def batches(spans: list[Span], size: int, prefix: str = "b") -> Iterator[SpanBatch]:
    for i in range(0, len(spans), size):
        yield SpanBatch(spans[i : i + size], f"{prefix}-{i}")
