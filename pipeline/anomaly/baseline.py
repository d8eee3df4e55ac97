"""Per-key baselines learned from past windows: an exponentially weighted mean and variance.

Each metric keeps `[mean, var, n]` (JSON data). With alpha = 2 / (N + 1) the EWMA
weighs roughly the last N windows (N = baseline horizon / hop; a 1 h horizon with 1 min
hops is ~60 windows). Updates use the incremental EWMA variance (West 1979 /
Finch 2009): diff = x - mean; mean += alpha * diff; var = (1 - alpha) * (var + alpha * diff^2).

Why EWMA and not a robust median/MAD: it needs O(1) state per key and metric (the state
table holds 10,000+ keys), it merges into a changelog as one small value, and its two
known weaknesses are handled where they matter: an anomaly cannot teach the baseline
(updates are frozen while an alert on that metric is active), and near-constant series
do not produce huge z-scores (std is floored at min_std_ratio x |mean|). Seasonality is
out of scope for now; the horizon sets how fast the baseline follows slow drifts.
"""

from __future__ import annotations

import math

Baseline = list[float]  # [mean, var, n]


def alpha_for(horizon_seconds: float, hop_seconds: float) -> float:
    n = max(1.0, horizon_seconds / hop_seconds)
    return 2.0 / (n + 1.0)


def update(baseline: Baseline | None, x: float, alpha: float) -> Baseline:
    """The baseline after learning one more window value `x`."""
    if baseline is None or baseline[2] == 0:
        return [x, 0.0, 1]
    mean, var, n = baseline
    diff = x - mean
    mean += alpha * diff
    var = (1.0 - alpha) * (var + alpha * diff * diff)
    return [mean, var, n + 1]


def std(baseline: Baseline) -> float:
    return math.sqrt(max(0.0, baseline[1]))
