"""The anomaly processor over synthetic streams of known shape (embedded state)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.anomaly.config import AnomalyConfig
from pipeline.anomaly.sketch import SketchMapping, add, merge_into, quantiles
from pipeline.config import ConfigError, build_config
from pipeline.spans import Resource, Span, SpanBatch
from pipeline.state import MemoryStateStore
from pipeline.telemetry import Telemetry
from processors.anomaly import META, AnomalyProcessor
from tests.anomaly_streams import NS, T0, Collected, KeyProfile, ManualClock, batches, context, window_spans

MIN = 60 * NS


def make(cfg: dict[str, Any], state: MemoryStateStore | None = None, telemetry: Telemetry | None = None):
    clock = ManualClock()
    events = Collected()
    proc = AnomalyProcessor(
        "anomaly", AnomalyConfig.model_validate(cfg), context(state, telemetry), clock=clock, on_event=events
    )
    return proc, clock, events


Modifier = Callable[[int, KeyProfile], dict[str, Any]]


def feed(
    proc: AnomalyProcessor,
    clock: ManualClock,
    profiles: list[KeyProfile],
    windows: range,
    *,
    rng: random.Random,
    modifier: Modifier | None = None,
    window_ns: int = MIN,
    batch_size: int = 250,
) -> list[Span]:
    """Generate `windows` of traffic for every profile and push it through in batches,
    with the wall clock following the stream. Returns the spans."""
    all_spans: list[Span] = []
    resources = {p.service: Resource({"service.name": p.service}) for p in profiles}
    for w in windows:
        spans: list[Span] = []
        for prof in profiles:
            mod = modifier(w, prof) if modifier else {}
            spans.extend(
                window_spans(rng, prof, T0 + w * window_ns, window_ns, resource=resources[prof.service], **mod)
            )
        spans.sort(key=lambda s: s.end_ns)
        for b in batches(spans, batch_size, f"w{w}"):
            clock.now = b.spans[-1].end_ns / NS
            out = proc.process(b)
            assert out is b
        all_spans.extend(spans)
    return all_spans


def tick(proc: AnomalyProcessor, clock: ManualClock, seconds: float) -> None:
    clock.now += seconds
    proc.process(SpanBatch([], "tick"))


COST_RULE = {"name": "cost_spike", "metric": "cost", "kind": "relative", "threshold": 2.0, "min_calls": 20}


def cost_spike(first: int, last: int, factor: float = 5.0) -> Modifier:
    return lambda w, _p: {"cost_factor": factor} if first <= w <= last else {}


# --- spikes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "spike_factor"),
    [({"size": "1m"}, 5.0), ({"size": "5m", "hop": "1m"}, 8.0)],
    ids=["tumbling", "hopping"],
)
def test_clean_cost_spike_yields_one_alert_within_expected_windows_and_one_resolve(
    window: dict[str, Any], spike_factor: float
) -> None:
    proc, clock, events = make(
        {
            "window": window,
            "allowed_lateness": "10s",
            "baseline": {"horizon": "1h", "warmup_windows": 15},
            "rules": [COST_RULE],
        }
    )
    size = AnomalyConfig.model_validate({"window": window}).window.size * NS
    spans = feed(
        proc,
        clock,
        [KeyProfile("chat", "gpt-4o")],
        range(60),
        rng=random.Random(7),
        modifier=cost_spike(40, 44, spike_factor),
    )
    tick(proc, clock, 600)

    fired, resolved = events.of("firing"), events.of("resolved")
    assert len(fired) == 1, [e["summary"] for e in events.events]
    assert len(resolved) == 1
    assert events.events == [fired[0], resolved[0]]
    spike_start, spike_end = T0 + 40 * MIN, T0 + 45 * MIN
    # fires on the first window whose cost is past the threshold: for tumbling the spike's
    # first window; for 5m/1m hopping once 3 of 5 panes carry the spike
    assert spike_start + MIN <= fired[0]["window"]["end_ns"] <= spike_start + size
    assert spike_end < resolved[0]["window"]["end_ns"] <= spike_end + size + MIN

    ev = fired[0]
    assert ev["rule"] == "cost_spike" and ev["severity"] == "warning" and ev["metric"] == "cost"
    assert ev["key"] == {"service": "chat", "model": "gpt-4o"}
    assert ev["observed"] >= ev["threshold"] == pytest.approx(ev["baseline"]["mean"] * 3)
    assert ev["baseline"]["windows"] >= 15
    assert resolved[0]["observed"] < resolved[0]["threshold"]
    assert resolved[0]["fingerprint"] == ev["fingerprint"]
    # the example traces are the costliest spans of the firing window
    in_window = [s for s in spans if ev["window"]["start_ns"] <= s.end_ns < ev["window"]["end_ns"]]
    costliest = sorted(in_window, key=lambda s: s.attributes["gen_ai.usage.cost_usd"], reverse=True)[:3]
    assert ev["example_trace_ids"] == [s.trace_id for s in costliest]


def test_steady_noisy_traffic_raises_no_alert_over_a_long_run() -> None:
    """24 h of the default 5-minute windows for 6 keys with Poisson volumes, lognormal
    latency, gamma token counts and 1-3 % errors, against the default rules: no alert."""
    proc, clock, events = make({})
    profiles = [
        KeyProfile("chat", "gpt-4o", calls_per_window=150),
        KeyProfile("chat", "gpt-4o-mini", calls_per_window=300, cost_per_call=0.0002, latency_ms=400),
        KeyProfile("search", "claude-sonnet-4", calls_per_window=100, latency_sigma=0.5, input_tokens=2000),
        KeyProfile("agent", "gpt-4.1", calls_per_window=120, error_rate=0.03, latency_ms=2500),
        KeyProfile("agent", "o3", calls_per_window=40, error_rate=0.02, latency_ms=9000, latency_sigma=0.6),
        KeyProfile("batch", "gpt-4o-mini", calls_per_window=25, cost_per_call=0.0001),
    ]
    windows = 24 * 12
    feed(proc, clock, profiles, range(windows), rng=random.Random(2026), window_ns=5 * MIN, batch_size=500)
    tick(proc, clock, 600)
    key_windows = windows * len(profiles)
    checks = key_windows * len(proc.rules)
    rate = len(events.of("firing")) / checks
    print(
        f"\nfalse alerts: {len(events.of('firing'))} in {key_windows} key-windows x {len(proc.rules)} rules "
        f"= {checks} checks (rate {rate:.2e})"
    )
    assert events.events == [], [e["summary"] for e in events.events]
    assert proc.ctx.telemetry.anomaly_windows_evaluated.labels("anomaly")._value.get() >= key_windows - len(profiles)


# --- gates: volume, warm-up, cooldown ------------------------------------------------------


@pytest.mark.parametrize(("min_calls", "expected"), [(20, 0), (3, 1)])
def test_min_volume_gates_a_rule(min_calls: int, expected: int) -> None:
    proc, clock, events = make(
        {
            "window": {"size": "1m"},
            "baseline": {"warmup_windows": 10},
            "rules": [{**COST_RULE, "min_calls": min_calls}],
        }
    )
    quiet = KeyProfile("batch", "gpt-4o", calls_per_window=8)
    feed(proc, clock, [quiet], range(40), rng=random.Random(3), modifier=cost_spike(30, 31, 20.0))
    tick(proc, clock, 600)
    assert len(events.of("firing")) == expected


def test_no_relative_alert_during_warm_up() -> None:
    proc, clock, events = make(
        {
            "window": {"size": "1m"},
            "baseline": {"warmup_windows": 20},
            "rules": [COST_RULE],
        }
    )
    feed(proc, clock, [KeyProfile("chat", "m")], range(15), rng=random.Random(4), modifier=cost_spike(10, 11, 10))
    tick(proc, clock, 600)
    assert events.events == []


def test_cooldown_holds_back_a_second_firing_for_the_same_key_and_rule() -> None:
    telemetry = Telemetry()
    proc, clock, events = make(
        {
            "window": {"size": "1m"},
            "baseline": {"warmup_windows": 10},
            "cooldown": "30m",
            "rules": [COST_RULE],
        },
        telemetry=telemetry,
    )

    def spikes(w: int, _p: KeyProfile) -> dict[str, Any]:
        # three separate spikes: at 20 (fires), 30 (within 30 min of 20: held back), 60 (fires again)
        return {"cost_factor": 6.0} if w in (20, 30, 60) else {}

    feed(proc, clock, [KeyProfile("chat", "m")], range(70), rng=random.Random(5), modifier=spikes)
    tick(proc, clock, 600)
    fired = events.of("firing")
    assert [(e["window"]["end_ns"] - T0) // MIN for e in fired] == [21, 61]
    assert len(events.of("resolved")) == 2
    assert telemetry.anomaly_alerts_suppressed.labels("cost_spike", "cooldown")._value.get() == 1


def test_alert_stays_single_while_the_anomaly_lasts() -> None:
    proc, clock, events = make({"window": {"size": "1m"}, "baseline": {"warmup_windows": 10}, "rules": [COST_RULE]})
    feed(proc, clock, [KeyProfile("chat", "m")], range(60), rng=random.Random(6), modifier=cost_spike(20, 45, 5))
    tick(proc, clock, 600)
    assert [e["state"] for e in events.events] == ["firing", "resolved"]
    # the baseline did not learn the anomaly: it still resolves when the spike ends
    assert (events.of("resolved")[0]["window"]["end_ns"] - T0) // MIN == 47


# --- absolute rules, tokens per call, latency ------------------------------------------------


def test_absolute_latency_error_rate_and_prompt_bloat_rules() -> None:
    proc, clock, events = make(
        {
            "window": {"size": "1m"},
            "baseline": {"warmup_windows": 10},
            "rules": [
                {"name": "slow", "metric": "latency_p95_ms", "kind": "absolute", "threshold": 3000},
                {
                    "name": "errors",
                    "metric": "error_rate",
                    "kind": "absolute",
                    "threshold": 0.2,
                    "severity": "critical",
                },
                {"name": "bloat", "metric": "input_tokens_per_call", "kind": "relative", "threshold": 1.0},
                {"name": "cost_hour", "metric": "cost_per_hour", "kind": "absolute", "threshold": 100},
            ],
        }
    )

    def mod(w: int, _p: KeyProfile) -> dict[str, Any]:
        return {10: {"latency_factor": 6.0}, 20: {"error_rate": 0.5}, 30: {"token_factor": 3.0}}.get(w, {})

    feed(proc, clock, [KeyProfile("chat", "m", latency_ms=800)], range(40), rng=random.Random(8), modifier=mod)
    tick(proc, clock, 600)
    fired = {e["rule"]: (e["window"]["end_ns"] - T0) // MIN for e in events.of("firing")}
    assert fired == {"slow": 11, "errors": 21, "bloat": 31}
    errors = next(e for e in events.of("firing") if e["rule"] == "errors")
    assert errors["severity"] == "critical" and 0.2 < errors["observed"] < 1
    assert len(errors["example_trace_ids"]) == 3
    assert {e["rule"] for e in events.of("resolved")} == {"slow", "errors", "bloat"}


def test_latency_sketch_quantiles_are_within_relative_accuracy_and_merge_exactly() -> None:
    rng = random.Random(9)
    m = SketchMapping(0.01)
    values = [rng.lognormvariate(13, 1.2) for _ in range(20_000)]
    a: dict[str, int] = {}
    b: dict[str, int] = {}
    for i, v in enumerate(values):
        add(a if i % 2 else b, m, v)
    whole: dict[str, int] = {}
    for v in values:
        add(whole, m, v)
    merged = dict(a)
    merge_into(merged, b)
    assert merged == whole
    ordered = sorted(values)
    qs = (0.5, 0.95, 0.99, 0.999)
    for q, est in zip(qs, quantiles(whole, 0, m, qs), strict=True):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        assert est is not None and abs(est - exact) <= 0.01 * exact + 1e-9


# --- event time: lateness, idle close, future spans -------------------------------------------


def test_late_spans_are_counted_not_windowed_and_still_passed_on() -> None:
    telemetry = Telemetry()
    proc, clock, _ = make(
        {"window": {"size": "1m"}, "allowed_lateness": "10s", "rules": [COST_RULE]}, telemetry=telemetry
    )
    feed(proc, clock, [KeyProfile("chat", "m")], range(10), rng=random.Random(10))
    late = window_spans(random.Random(11), KeyProfile("chat", "m", calls_per_window=25), T0 + 2 * MIN, MIN)
    batch = SpanBatch(list(late), "late")
    out = proc.process(batch)
    assert out is batch and out.spans == late
    assert proc.stats()["late"] == len(late) > 0
    assert telemetry.anomaly_unwindowed_spans.labels("anomaly", "late")._value.get() == len(late)
    # a span within the allowed lateness of the newest one is still windowed
    newest = proc.meta["wm"]
    ok = Span(
        "a" * 32,
        "b" * 16,
        "chat",
        newest - 5 * NS - 1000,
        newest - 5 * NS,
        resource=Resource({"service.name": "chat"}),
        attributes={"gen_ai.request.model": "m"},
    )
    proc.process(SpanBatch([ok], "ok"))
    assert proc.stats()["late"] == len(late)


def test_spans_from_the_far_future_are_counted_and_do_not_move_the_watermark() -> None:
    proc, clock, _ = make({"window": {"size": "1m"}, "max_clock_skew": "5m", "rules": [COST_RULE]})
    feed(proc, clock, [KeyProfile("chat", "m")], range(3), rng=random.Random(12))
    wm = proc.meta["wm"]
    future = window_spans(random.Random(13), KeyProfile("chat", "m"), int(clock.now * NS) + 3600 * NS, MIN)
    proc.process(SpanBatch(future, "future"))
    assert proc.meta["wm"] == wm
    assert proc.stats()["future"] == len(future)


def test_idle_windows_close_by_the_wall_clock_and_a_silent_key_resolves() -> None:
    proc, clock, events = make(
        {
            "window": {"size": "1m"},
            "allowed_lateness": "10s",
            "idle_close": "30s",
            "baseline": {"warmup_windows": 10},
            "rules": [COST_RULE],
        }
    )
    feed(proc, clock, [KeyProfile("chat", "m")], range(20), rng=random.Random(14), modifier=cost_spike(19, 19, 6))
    assert events.events == []  # the spike's window is still open: no newer span arrived
    tick(proc, clock, 45)  # 45 s after the last span: idle close passes the window end + lateness
    assert [e["state"] for e in events.events] == ["firing"]
    tick(proc, clock, 60)  # the key stays silent: its next window has no calls, the alert resolves
    assert [e["state"] for e in events.events] == ["firing", "resolved"]


# --- restart, keys --------------------------------------------------------------------------


def test_restart_over_the_same_state_keeps_baselines() -> None:
    """A processor re-created over a serialised-and-restored state table continues: its
    baselines are not warming up again, so a spike right after the restart fires."""
    cfg = {"window": {"size": "1m"}, "baseline": {"warmup_windows": 20}, "rules": [COST_RULE]}
    profile = KeyProfile("chat", "gpt-4o")
    store = MemoryStateStore()
    proc, clock, events = make(cfg, state=store)
    feed(proc, clock, [profile], range(30), rng=random.Random(15))
    before = json.loads(json.dumps(dict(store.table("anomaly/anomaly"))))  # what a changelog would carry
    key = "chat\x1fgpt-4o"
    learned = before[key]["b"]["cost"][2]
    assert learned >= 20
    proc.close()

    restored = MemoryStateStore()
    restored.table("anomaly/anomaly").update(json.loads(json.dumps(before)))
    proc2, clock2, events2 = make(cfg, state=restored)
    clock2.now = clock.now
    feed(proc2, clock2, [profile], range(30, 36), rng=random.Random(16), modifier=cost_spike(32, 32, 6))
    tick(proc2, clock2, 600)
    assert [e["state"] for e in events2.events] == ["firing", "resolved"]
    assert events2.events[0]["baseline"]["windows"] > learned
    assert (events2.events[0]["window"]["end_ns"] - T0) // MIN == 33

    # control: without the restored state the same stream raises nothing (still warming up)
    fresh, clock3, events3 = make(cfg)
    feed(fresh, clock3, [profile], range(30, 36), rng=random.Random(16), modifier=cost_spike(32, 32, 6))
    tick(fresh, clock3, 600)
    assert events3.events == []
    assert events.events == []


def test_state_is_json_data_written_once_per_batch() -> None:
    class CountingTable(dict[str, Any]):
        writes = 0

        def __setitem__(self, key: str, value: Any) -> None:
            CountingTable.writes += 1
            json.dumps(value)  # every value must be JSON-serialisable
            super().__setitem__(key, value)

    class Store:
        def __init__(self) -> None:
            self.t = CountingTable()

        def table(self, name: str) -> CountingTable:
            assert name == "anomaly/anomaly"
            return self.t

    store = Store()
    proc, clock, _ = make({"window": {"size": "1m"}, "rules": [COST_RULE]}, state=store)  # type: ignore[arg-type]
    profiles = [KeyProfile("a", "m"), KeyProfile("b", "m")]
    spans = window_spans(random.Random(17), profiles[0], T0, MIN) + window_spans(
        random.Random(18), profiles[1], T0, MIN
    )
    clock.now = T0 / NS + 60
    proc.process(SpanBatch(spans, "one"))
    assert CountingTable.writes == 3  # two keys + __meta__, whatever the number of spans
    assert META in store.t


def test_keys_beyond_max_keys_fold_into_other() -> None:
    proc, clock, _ = make({"window": {"size": "1m"}, "max_keys": 3, "rules": [COST_RULE]})
    profiles = [KeyProfile(f"svc{i}", "m", calls_per_window=5) for i in range(5)]
    feed(proc, clock, profiles, range(2), rng=random.Random(19))
    keys = {k for k in proc.table if k != META}
    assert len(keys) == 4 and "other\x1fother" in keys
    assert proc.stats()["overflow"] > 0


def test_group_by_feature_and_user_tier() -> None:
    proc, clock, events = make(
        {
            "group_by": ["feature", "user_tier"],
            "window": {"size": "1m"},
            "rules": [{"name": "calls", "metric": "calls", "kind": "absolute", "threshold": 2, "min_calls": 0}],
        }
    )
    spans = [
        Span(
            f"{i:032x}",
            f"{i:016x}",
            "x",
            T0 + i,
            T0 + i + 10,
            attributes={"app.feature": "search", "user.tier": "free"},
        )
        for i in range(5)
    ]
    clock.now = T0 / NS
    proc.process(SpanBatch(spans, "b"))
    tick(proc, clock, 600)
    assert events.of("firing")[0]["key"] == {"feature": "search", "user_tier": "free"}


# --- config ---------------------------------------------------------------------------------


def test_bad_rules_are_reported_with_their_yaml_path() -> None:
    raw = {
        "processors": {
            "anomaly": {
                "window": {"size": "5m", "hop": "2m"},
                "rules": [
                    {"name": "x", "metric": "cost", "kind": "relative", "threshold": -1},
                    {"name": "y", "metric": "latency_p42", "kind": "absolute", "threshold": 1},
                ],
            }
        },
        "sinks": {"prometheus": {}},
        "service": {"pipelines": {"traces": {"processors": ["anomaly"], "sinks": ["prometheus"]}}},
    }
    with pytest.raises(ConfigError) as err:
        build_config(raw, env={})
    text = str(err.value)
    assert "processors.anomaly.window" in text and "multiple of hop" in text
    assert "processors.anomaly.rules[0]" in text and "must be > 0" in text
    assert "processors.anomaly.rules[1].metric" in text


def test_default_config_builds_through_the_registry() -> None:
    raw = {
        "processors": {"anomaly": {"window": {"size": "5m", "hop": "1m"}, "cooldown": "1h"}},
        "sinks": {"prometheus": {}},
        "service": {"pipelines": {"traces": {"processors": ["anomaly"], "sinks": ["prometheus"]}}},
    }
    cfg = build_config(raw, env={})
    spec = cfg.processors["anomaly"]
    assert spec.type == "anomaly" and spec.config.cooldown == 3600 and spec.config.window.hop == 60
