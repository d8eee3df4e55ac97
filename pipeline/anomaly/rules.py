"""Rule verdicts: does one window's value break a rule, and against what threshold."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.anomaly.baseline import Baseline, std
from pipeline.anomaly.config import BaselineConfig, RuleConfig


@dataclass(frozen=True)
class Verdict:
    hit: bool
    threshold: float | None  # the value the observation was compared with
    detail: str = ""  # why there was no verdict (volume, warm-up), or the z-score


NO_VOLUME = "below min_calls"
WARMING_UP = "baseline warming up"


def judge(
    rule: RuleConfig, value: float | None, calls: int, baseline: Baseline | None, bcfg: BaselineConfig
) -> Verdict:
    if calls < rule.min_calls or value is None:
        return Verdict(False, None, NO_VOLUME)
    above = rule.direction == "above"
    if rule.kind == "absolute":
        thr = rule.threshold
        return Verdict(value > thr if above else value < thr, thr)
    if baseline is None or baseline[2] < bcfg.warmup_windows:
        return Verdict(False, None, WARMING_UP)
    mean = baseline[0]
    if rule.kind == "relative":
        if mean <= rule.min_baseline:
            return Verdict(False, None, "baseline at or below min_baseline")
        thr = mean * (1.0 + rule.threshold) if above else mean * (1.0 - rule.threshold)
        return Verdict(value >= thr if above else value <= thr, thr)
    # zscore
    sd = max(std(baseline), bcfg.min_std_ratio * abs(mean), 1e-12)
    z = (value - mean) / sd
    thr = mean + rule.threshold * sd if above else mean - rule.threshold * sd
    return Verdict(z >= rule.threshold if above else -z >= rule.threshold, thr, f"z={z:.2f}")
