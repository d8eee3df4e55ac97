"""Configuration of the anomaly processor (`processors.anomaly` in YAML).

```yaml
processors:
  anomaly:
    group_by: [service, model]     # service, model, operation, provider, feature, user_tier
    window: {size: 5m, hop: 1m}    # hop omitted = tumbling windows
    allowed_lateness: 30s
    baseline: {horizon: 1h, warmup_windows: 12}
    cooldown: 30m
    rules:
      - {name: cost_spike, metric: cost, kind: relative, threshold: 2.0, min_calls: 20}   # +200 %
      - {name: cost_rate, metric: cost_per_hour, kind: absolute, threshold: 50}
      - {name: slow_p95, metric: latency_p95_ms, kind: absolute, threshold: 8000}
      - {name: errors, metric: error_rate, kind: absolute, threshold: 0.05, severity: critical}
      - {name: latency_z, metric: latency_p95_ms, kind: zscore, threshold: 4}
      - {name: prompt_bloat, metric: input_tokens_per_call, kind: relative, threshold: 1.0}
```
Durations are seconds (number) or strings such as `250ms`, `30s`, `5m`, `1h`, `1d`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from pipeline.component import ComponentConfig

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like '90s', '5m', '1h'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration such as 30s, 5m, 1h, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]

Dimension = Literal["service", "model", "operation", "provider", "feature", "user_tier"]

# What a rule can watch, computed per key and window.
Metric = Literal[
    "calls",
    "errors",
    "error_rate",  # errors / calls, 0..1
    "cost",  # USD in the window
    "cost_per_hour",  # USD in the window scaled to one hour
    "input_tokens",
    "output_tokens",
    "tokens",  # input + output
    "tokens_per_call",  # (input + output) / calls
    "input_tokens_per_call",  # prompt bloat
    "output_tokens_per_call",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]

Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


class WindowConfig(ComponentConfig):
    size: Duration = Field(300.0, gt=0, description="Window length.")
    hop: Duration | None = Field(
        None, gt=0, description="Hop of hopping windows (size must be a multiple); omitted = tumbling (hop = size)."
    )

    @model_validator(mode="after")
    def _hop_divides(self) -> WindowConfig:
        if self.hop is not None:
            if self.hop > self.size:
                raise ValueError("hop must not exceed size")
            ratio = self.size / self.hop
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError("size must be a whole multiple of hop")
        return self

    @property
    def hop_seconds(self) -> float:
        return self.hop if self.hop is not None else self.size


class BaselineConfig(ComponentConfig):
    horizon: Duration = Field(
        3600.0,
        gt=0,
        description="Span of past windows the EWMA baseline mostly reflects: alpha = 2 / (horizon/hop + 1).",
    )
    warmup_windows: int = Field(
        10, ge=1, description="Windows a key's baseline must have learned before relative/zscore rules can fire."
    )
    min_calls: int = Field(1, ge=1, description="A window updates the baseline only with at least this many calls.")
    freeze_during_alert: bool = Field(
        True, description="An active alert stops its metric's baseline from learning the anomaly itself."
    )
    min_std_ratio: float = Field(
        0.05,
        ge=0,
        description="z-scores divide by max(std, min_std_ratio * |mean|), so a near-constant series is not "
        "alerted on by a tiny wobble.",
    )


class RuleConfig(ComponentConfig):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="Rule name (a metric label).")
    metric: Metric = Field(..., description="What the rule watches per key and window.")
    kind: Literal["relative", "absolute", "zscore"] = Field(
        ...,
        description="relative: change against the baseline mean (threshold 2.0 = +200 %); absolute: the value "
        "itself; zscore: standard deviations from the baseline mean.",
    )
    threshold: float = Field(..., description="Relative change, absolute value, or z-score.")
    direction: Literal["above", "below"] = Field("above", description="Fire above or below the threshold.")
    min_calls: int = Field(20, ge=0, description="Calls a window needs before this rule can fire there.")
    severity: Severity = "warning"
    for_windows: int = Field(1, ge=1, description="Consecutive anomalous windows before firing.")
    resolve_windows: int = Field(1, ge=1, description="Consecutive normal windows before resolving.")
    cooldown: Duration | None = Field(None, ge=0, description="Overrides the processor's cooldown for this rule.")
    min_baseline: float = Field(
        0.0, ge=0, description="relative rules: no verdict while the baseline mean is at or below this."
    )

    @model_validator(mode="after")
    def _threshold_sane(self) -> RuleConfig:
        if self.kind in ("relative", "zscore") and self.threshold <= 0:
            raise ValueError(f"threshold of a {self.kind} rule must be > 0")
        if self.kind == "relative" and self.direction == "below" and self.threshold >= 1:
            raise ValueError("a relative rule firing below the baseline needs threshold < 1 (0.5 = -50 %)")
        return self


def default_rules() -> list[RuleConfig]:
    return [
        RuleConfig(name="cost_spike", metric="cost", kind="relative", threshold=2.0, min_calls=20),
        RuleConfig(
            name="error_rate", metric="error_rate", kind="absolute", threshold=0.1, min_calls=100, severity="critical"
        ),
        RuleConfig(name="latency_p95_z", metric="latency_p95_ms", kind="zscore", threshold=5.0, min_calls=50),
        RuleConfig(name="prompt_bloat", metric="input_tokens_per_call", kind="relative", threshold=1.0),
    ]


class AnomalyConfig(ComponentConfig):
    group_by: list[Dimension] = Field(
        default_factory=lambda: ["service", "model"],
        min_length=1,
        description="Dimensions of a key: service, model (request, else response model), operation, provider, "
        "feature (app.feature), user_tier (user.tier).",
    )
    window: WindowConfig = Field(default_factory=WindowConfig)
    allowed_lateness: Duration = Field(
        30.0, ge=0, description="How far behind the newest span end time a span may end and still be windowed."
    )
    idle_close: Duration | None = Field(
        60.0,
        ge=0,
        description="Close windows by the wall clock when no newer span arrived for this long (null: event time "
        "only). Spans ending before a closed window are counted as late.",
    )
    max_clock_skew: Duration = Field(
        300.0, gt=0, description="Spans ending further in the future than this are not windowed (counted)."
    )
    relative_accuracy: float = Field(0.01, gt=0, lt=1, description="Relative error of latency percentiles.")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    cooldown: Duration = Field(
        1800.0, ge=0, description="After firing, a rule stays quiet for this key at least this long (event time)."
    )
    max_keys: int = Field(
        20_000, gt=0, description="Keys tracked at most; spans of further keys are folded into one 'other' key."
    )
    key_ttl: Duration = Field(86_400.0, gt=0, description="A key without spans for this long is forgotten.")
    example_traces: int = Field(3, ge=0, le=20, description="Example trace ids carried by each alert.")
    rules: list[RuleConfig] = Field(default_factory=default_rules, description="Alert rules, evaluated per window.")

    @model_validator(mode="after")
    def _unique_rules(self) -> AnomalyConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique (repeated: {', '.join(dupes)})")
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by lists a dimension twice")
        return self
