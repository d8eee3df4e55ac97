"""Attribution through Kafka workers (Tansu, real `tracepipe receiver` and `tracepipe worker`
processes, the shipped config/distributed.yaml): a 3-level trace from the real OTel SDK whose
ids sit only on the root span, exported last, moves the user's, the customer+feature's and
the model's budgets by exactly its priced cost; Prometheus and `tracepipe cost` on the worker
agree with `budgets show` per model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.attribution_helpers import Turn, per_model_cost, send_trace, wait_until
from tests.distributed_helpers import role_env, start_role, write_config
from tests.pipeline_proc import cli
from tests.services import RunningService, start_service

# The seconds this file took on the 2-core machine (2026-12-03): tests/conftest.py starts the longest
# files first, so that the test processes of tests/run finish together.
pytestmark = pytest.mark.slow(seconds=21)

TURN = Turn("u-dist", "initech", "report", "s-dist", "gpt-4o", "gpt-4o-2024-08-06", 2000, 400)


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def _budgets_show(cfg: Path, scope: str, id_: str) -> tuple[float, int]:
    out = cli("budgets", "show", scope, id_, "--json", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)["budgets"]
    return row["spent_usd"], row["spans"]


def test_root_only_ids_move_every_budget_through_kafka_workers(kafka: RunningService, redis_service,
                                                               tmp_path: Path, monkeypatch) -> None:
    cfg = write_config(tmp_path, topic="attr_spans", group="attr-workers", partitions=2, budgets=True)
    raw = yaml.safe_load(cfg.read_text())
    assert raw["service"]["pipelines"]["traces"]["processors"].index("context") < \
        raw["service"]["pipelines"]["traces"]["processors"].index("cost")
    raw["sinks"]["budgets"]["budgets"].update({
        "customer_feature": {"scope": "customer+feature", "period": "month"},
        "model_daily": {"scope": "model", "period": "day"},
    })
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("REDIS_URL", redis_service.url)  # the CLI resolves the config's placeholders
    env = role_env(kafka.url, chdb_dir=tmp_path / "ch", redis_url=redis_service.url, data_dir=tmp_path / "data")
    worker = start_role("worker", cfg, env, tmp_path / "worker.log")
    receiver = start_role("receiver", cfg, env, tmp_path / "receiver.log")
    try:
        def children_held() -> None:
            wait_until(lambda: worker.metric("tracepipe_context_buffered_spans") == 2, 60,
                       "the worker's context processor to hold the two children", interval=0.2)

        send_trace(receiver.otlp_http, TURN, before_root=children_held)
        wait_until(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="budgets") >= 3, 60,
                   "the worker to account the trace", interval=0.2)
        assert worker.metric("tracepipe_context_buffered_spans") == 0
        assert worker.metric("tracepipe_context_spans_without_root_total") == 0
        cost = pytest.approx(TURN.cost, abs=1e-12)
        assert _budgets_show(cfg, "user", "u-dist") == (cost, 1)
        assert _budgets_show(cfg, "customer+feature", "initech/report") == (cost, 1)
        assert _budgets_show(cfg, "model", "gpt-4o") == (cost, 1)
        assert per_model_cost(worker.metrics()) == {"gpt-4o": pytest.approx(TURN.cost, abs=1e-9)}
        wait_until(lambda: worker.metric("tracepipe_sink_sent_spans_total", sink="clickhouse") >= 3, 60,
                   "the worker to store the trace", interval=0.2)
        out = cli("cost", "-c", str(cfg), "--api", f"127.0.0.1:{worker.api_port}", "--by", "model", "--json")
        assert out.returncode == 0, out.stderr
        assert {r["group"]: r["cost_usd"] for r in json.loads(out.stdout)} == {
            "gpt-4o": pytest.approx(TURN.cost, abs=1e-9)}
        out = cli("sessions", "show", "s-dist", "-c", str(cfg), "--api", f"127.0.0.1:{worker.api_port}", "--json")
        assert out.returncode == 0, out.stderr
        session = json.loads(out.stdout)
        assert session["totals"]["turns"] == 1 and session["users"] == ["u-dist"]
    finally:
        receiver.stop()
        assert worker.stop() == 0
