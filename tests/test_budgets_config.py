"""Budgets config: bad values are rejected with their YAML path; periods follow the local calendar."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipeline.budgets.config import parse_scope
from pipeline.budgets.model import decode_id, encode_id
from pipeline.budgets.periods import period_window
from pipeline.config import ConfigError, build_config, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "budgets.example.yaml"


def _raw(budgets: dict, **sink: object) -> dict:
    return {
        "sinks": {"budgets": {"budgets": budgets, **sink}},
        "service": {"pipelines": {"p": {"sinks": ["budgets"]}}},
    }


def test_example_config_validates() -> None:
    cfg = load_config(EXAMPLE, env={})
    budgets = cfg.sinks["budgets"].config
    assert budgets.budgets["customer_feature_monthly"].dims == ("customer", "feature")
    assert budgets.budgets["user_daily"].tiers["enterprise"] is None


@pytest.mark.parametrize(
    ("budget", "sink", "path", "message"),
    [
        ({"scope": "usr"}, {}, "sinks.budgets.budgets.b.scope", "unknown scope 'usr'"),
        ({"scope": "user", "period": "fortnight"}, {}, "sinks.budgets.budgets.b.period", "'hour'"),
        ({"scope": "user", "time_zone": "Mars/Olympus"}, {}, "sinks.budgets.budgets.b.time_zone", "unknown time zone"),
        ({"scope": "user", "limit": {"usd": -1}}, {}, "sinks.budgets.budgets.b.limit.usd", "greater than or equal"),
        ({"scope": "user", "thresholds": [0]}, {}, "sinks.budgets.budgets.b.thresholds", "fraction"),
        ({"scope": "user", "tiers": {"free": {"dollars": 1}}}, {}, "sinks.budgets.budgets.b.tiers.free", "unknown"),
        ({"scope": "user"}, {"redis": {"url": "http://x"}}, "sinks.budgets.redis.url", "redis://"),
        ({"scope": "user+user"}, {}, "sinks.budgets.budgets.b.scope", "twice"),
    ],
)
def test_bad_budget_config_names_its_yaml_path(budget: dict, sink: dict, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(_raw({"b": budget}, **sink))
    text = str(info.value)
    assert path in text and message in text, text


def test_a_budgets_sink_needs_at_least_one_budget() -> None:
    with pytest.raises(ConfigError) as info:
        build_config(_raw({}))
    assert "sinks.budgets.budgets" in str(info.value)


def test_scopes_and_aliases() -> None:
    assert parse_scope("customer+feature") == ("customer", "feature")
    assert parse_scope(["model"]) == ("model",)
    assert parse_scope("global") == ()


def test_ids_round_trip_with_separators_inside_values() -> None:
    values = ("acme/eu", "chat bot", "100%")
    assert decode_id(encode_id(values)) == values
    assert encode_id(("alice@example.com",)) == "alice@example.com"


@pytest.mark.parametrize(
    ("zone", "period", "at", "start", "end"),
    [
        # DST starts in Paris on 2026-03-29: that day has 23 hours.
        ("Europe/Paris", "day", "2026-03-29T12:00", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00"),
        ("Europe/Paris", "hour", "2026-10-25T02:30+01:00", "2026-10-25T02:00+01:00", "2026-10-25T03:00+01:00"),
        ("Asia/Kolkata", "hour", "2026-11-23T10:40", "2026-11-23T10:00+05:30", "2026-11-23T11:00+05:30"),
        ("UTC", "week", "2026-11-25T08:00", "2026-11-23T00:00+00:00", "2026-11-30T00:00+00:00"),
        ("America/New_York", "month", "2026-12-31T23:00", "2026-12-01T00:00-05:00", "2027-01-01T00:00-05:00"),
    ],
)
def test_periods_are_calendar_aligned_in_their_zone(zone: str, period: str, at: str, start: str, end: str) -> None:
    tz = ZoneInfo(zone)
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    s, e = period_window(period, tz, when.timestamp())
    assert (s, e) == (datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp())
    assert s <= when.timestamp() < e


def test_ambiguous_local_hour_gives_two_distinct_hour_periods() -> None:
    tz = ZoneInfo("Europe/Paris")
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).timestamp()  # 02:30 CET
    a, b = period_window("hour", tz, first), period_window("hour", tz, second)
    assert a != b and a[1] == b[0]


def test_tier_and_override_limits_inherit_the_fields_they_leave_out() -> None:
    from pipeline.budgets.model import NO_LIMIT, ResolvedLimit, budget_from_config

    cfg = (
        build_config(
            _raw(
                {
                    "b": {
                        "scope": "customer+feature",
                        "limit": {"usd": 500, "tokens": 1000},
                        "tiers": {"pro": {"usd": 900}, "free": {"tokens": None}, "enterprise": None},
                        "overrides": {"acme/chat": {"usd": 2000}},
                    }
                }
            )
        )
        .sinks["budgets"]
        .config
    )
    b = budget_from_config("b", cfg.budgets["b"], cfg)
    usd = 10**9
    assert b.limit_for("acme/chat", None) == ResolvedLimit(2000 * usd, 1000)
    assert b.limit_for("x/y", "pro") == ResolvedLimit(900 * usd, 1000)
    assert b.limit_for("x/y", "free") == ResolvedLimit(500 * usd, NO_LIMIT)  # tokens explicitly unlimited
    assert b.limit_for("x/y", "enterprise").unlimited
    assert b.limit_for("x/y", "unknown-tier") == ResolvedLimit(500 * usd, 1000)
