"""The chart's Prometheus rules: `promtool check rules` and `promtool test rules` (Debian's prometheus).

The unit tests in tests/prometheus_rules/alerts_test.yaml drive every alert through a firing
case (with its exact labels and annotations) and a quiet case (a blip shorter than `for:`,
small spend, sampling drops, shrinking lag). The static checks hold each alert to the
alert-fatigue rules of the seeds: a `for:`, a severity, a summary and a runbook line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.services.requirements import require_binary

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "helm" / "tracepipe" / "rules"
RULE_FILES = sorted(RULES.glob("*.yaml"))
UNIT_TESTS = ROOT / "tests" / "prometheus_rules" / "alerts_test.yaml"
SEVERITIES = {"critical", "warning", "info"}
# level:metric:operations (https://prometheus.io/docs/practices/rules/)
RECORD_NAME = re.compile(r"^[a-z_]+:tracepipe_[a-z_]+:[a-z0-9_]+$")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = require_binary("promtool")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def all_rules() -> list[dict]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules_passes() -> None:
    proc = promtool("check", "rules", *map(str, RULE_FILES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_of_the_alerting_rules_pass() -> None:
    proc = promtool("test", "rules", str(UNIT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    alerts = {r["alert"] for r in all_rules() if "alert" in r}
    assert alerts - fired == set(), "alerts never shown to fire"
    assert alerts - quiet == set(), "alerts never shown to stay quiet"


def test_alerts_follow_the_alert_fatigue_rules() -> None:
    for rule in (r for r in all_rules() if "alert" in r):
        name = rule["alert"]
        assert name.startswith("Tracepipe"), name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{name}: needs a sustained condition (for:)"
        assert rule["labels"]["severity"] in SEVERITIES, name
        ann = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(ann), name
        assert len(ann["runbook"]) > 40, f"{name}: the runbook line should say what to do"


def test_recording_rules_follow_the_naming_convention_and_are_used() -> None:
    records = [r["record"] for r in all_rules() if "record" in r]
    assert len(records) == len(set(records))
    bad = [r for r in records if not RECORD_NAME.match(r)]
    assert bad == []
    used = "\n".join(p.read_text() for p in (ROOT / "helm" / "tracepipe" / "dashboards").glob("*.json"))
    used += "\n".join(str(r.get("expr")) for r in all_rules())
    unused = [r for r in records if r not in used]
    assert unused == [], "recording rules nothing reads"
