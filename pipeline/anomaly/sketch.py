"""A mergeable latency sketch with a known relative error (the DDSketch algorithm).

Values are counted in logarithmic buckets: bucket `k` holds values in
(gamma^(k-1), gamma^k] with gamma = (1 + a) / (1 - a). Any quantile read back from a
bucket (as 2·gamma^k / (gamma + 1)) is within relative error `a` of the true value at
that rank, whatever the distribution (Masson, Rim, Lee: "DDSketch", VLDB 2019).
Two sketches with the same `a` merge exactly by adding their bucket counts, so the panes
of a hopping window merge into the window, and partial sketches from several workers
merge into one.

Why not the `ddsketch` package: its stores are dense lists grown in 128-bin chunks
(about a kilobyte per sketch, and we keep one per key and pane: 10,000 keys x panes),
it serialises through protobuf only, and its per-value `add` is several Python calls.
Here a sketch is a plain `dict[str, int]` of non-empty buckets (a dozen entries for a
typical latency spread), stored as is in the JSON state table; the hot path inlines the
bucket computation (one `log`, one dict update per span).
"""

from __future__ import annotations

import math


class SketchMapping:
    """Value <-> bucket index for one relative accuracy."""

    __slots__ = ("gamma", "inv_log_gamma", "relative_accuracy")

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be in (0, 1)")
        self.relative_accuracy = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self.inv_log_gamma = 1.0 / math.log(self.gamma)

    def key(self, value: float) -> str:
        """Bucket of a positive value, as the string key stored in the sketch."""
        return str(math.ceil(math.log(value) * self.inv_log_gamma))

    def value(self, key: int) -> float:
        """The representative value of a bucket (relative error <= a for anything in it)."""
        return 2.0 * self.gamma**key / (self.gamma + 1.0)


def add(bins: dict[str, int], mapping: SketchMapping, value: float) -> None:
    """Count one positive value (non-positive values are counted by the caller as zeros)."""
    k = mapping.key(value)
    bins[k] = bins.get(k, 0) + 1


def merge_into(dst: dict[str, int], src: dict[str, int]) -> None:
    """Add every bucket of `src` to `dst` (exact: merging commutes with adding)."""
    for k, c in src.items():
        dst[k] = dst.get(k, 0) + c


def quantiles(bins: dict[str, int], zeros: int, mapping: SketchMapping, qs: tuple[float, ...]) -> list[float | None]:
    """The values at quantiles `qs` (each in [0, 1]); None for an empty sketch.

    Uses the lower rank q·(n-1), as DDSketch does; `zeros` counts values <= 0.
    """
    total = zeros + sum(bins.values())
    if total == 0:
        return [None for _ in qs]
    ordered = sorted((int(k), c) for k, c in bins.items())
    out: list[float | None] = []
    for q in qs:
        rank = q * (total - 1)
        if rank < zeros:
            out.append(0.0)
            continue
        seen = zeros
        value = mapping.value(ordered[-1][0])
        for k, c in ordered:
            seen += c
            if seen > rank:
                value = mapping.value(k)
                break
        out.append(value)
    return out
