"""OpenTelemetry consistent probability sampling: thresholds, randomness, tracestate `ot=th:`.

tracepipe samples the way the OTel specification "TraceState: Probability Sampling"
(OTEP 235, W3C Trace Context Level 2 randomness) and the Collector's
probabilisticsampler in `proportional`/`equalizing` mode do:

- randomness R: the `rv` sub-key of the `ot` tracestate entry when present (14 hex
  digits), else the least-significant 56 bits of the trace id (its last 14 hex digits);
- a probability p becomes a rejection threshold T = 2^56 - round(p * 2^56), rounded to
  `precision` significant hex digits (the Collector's `sampling_precision`, default 4);
- a trace is kept iff R >= T. A lower probability's kept set is a subset of a higher
  one's, so every service and every run that sees the same trace id decides alike;
- kept spans carry `ot=th:<T as hex, trailing zeros trimmed>` (th:0 = 100%, th:8 = 50%,
  th:c = 25%), from which any consumer derives the adjusted count 1/p.

The conversions mirror the Collector's pkg/sampling (ProbabilityToThresholdWithPrecision,
Threshold.TValue) so the test vectors of that package hold here.
"""

from __future__ import annotations

MAX_ADJUSTED_COUNT = 1 << 56
NUM_HEX_DIGITS = 14
MIN_PROBABILITY = 1.0 / MAX_ADJUSTED_COUNT


def probability_to_threshold(prob: float, precision: int = 0) -> int:
    """Rejection threshold of `prob`; `precision` significant hex digits (0 = full)."""
    if not MIN_PROBABILITY <= prob <= 1:
        raise ValueError(f"sampling probability {prob} out of range [2^-56, 1]")
    scaled = round(prob * MAX_ADJUSTED_COUNT)
    threshold = MAX_ADJUSTED_COUNT - scaled
    if precision == 0 or prob == 1:
        return threshold
    reject = 1 - prob
    while reject * 16 < 1:  # leading zero digits do not count towards precision
        reject *= 16
        precision += 1
    if precision > NUM_HEX_DIGITS:
        raise ValueError("sampling precision too great for the probability")
    shift = 4 * (NUM_HEX_DIGITS - precision)
    if shift == 0:
        return threshold
    rounded = ((threshold + (1 << (shift - 1))) >> shift) << shift
    # Rounding up past the largest threshold (probabilities near 2^-56) keeps full precision.
    return threshold if rounded >= MAX_ADJUSTED_COUNT else rounded


def threshold_to_probability(threshold: int) -> float:
    return (MAX_ADJUSTED_COUNT - threshold) / MAX_ADJUSTED_COUNT


def threshold_to_tvalue(threshold: int) -> str:
    """The `th` encoding: 14 hex digits with trailing zeros trimmed ("0" for 100%)."""
    if threshold == 0:
        return "0"
    return f"{threshold:014x}".rstrip("0")


def tvalue_to_threshold(tvalue: str) -> int:
    if not 1 <= len(tvalue) <= NUM_HEX_DIGITS:
        raise ValueError(f"invalid th value {tvalue!r}")
    return int(tvalue.ljust(NUM_HEX_DIGITS, "0"), 16)


def _ot_entry(trace_state: str) -> str | None:
    for member in trace_state.split(","):
        key, sep, value = member.strip().partition("=")
        if sep and key == "ot":
            return value
    return None


def ot_values(trace_state: str) -> dict[str, str]:
    """The sub-keys of the `ot` tracestate entry (`ot=th:8;rv:...` -> {"th": "8", "rv": "..."})."""
    entry = _ot_entry(trace_state) if trace_state else None
    if not entry:
        return {}
    out: dict[str, str] = {}
    for part in entry.split(";"):
        k, sep, v = part.partition(":")
        if sep:
            out[k] = v
    return out


def randomness(trace_id: str, trace_state: str = "") -> int:
    """R: explicit `rv` if present and valid, else the trace id's lower 56 bits."""
    if trace_state and "rv:" in trace_state:
        rv = ot_values(trace_state).get("rv")
        if rv is not None and len(rv) == NUM_HEX_DIGITS:
            try:
                return int(rv, 16)
            except ValueError:
                pass
    try:
        return int(trace_id[-NUM_HEX_DIGITS:], 16)
    except ValueError:
        return 0


def incoming_threshold(trace_state: str) -> int | None:
    """The threshold an upstream sampler recorded (`th`), or None."""
    if not trace_state or "th:" not in trace_state:
        return None
    th = ot_values(trace_state).get("th")
    if th is None:
        return None
    try:
        return tvalue_to_threshold(th)
    except ValueError:
        return None


def with_threshold(trace_state: str, threshold: int) -> str:
    """tracestate with `th` set in the `ot` entry, which moves first (W3C: updated members go left)."""
    members = [m.strip() for m in trace_state.split(",") if m.strip()] if trace_state else []
    ot_parts: list[str] = []
    rest: list[str] = []
    for m in members:
        key, _, value = m.partition("=")
        if key == "ot":
            ot_parts = [p for p in value.split(";") if p and not p.startswith("th:")]
        else:
            rest.append(m)
    entry = "ot=" + ";".join([f"th:{threshold_to_tvalue(threshold)}", *ot_parts])
    return ",".join([entry, *rest])


def should_sample(threshold: int, trace_id: str, trace_state: str = "") -> bool:
    return randomness(trace_id, trace_state) >= threshold
