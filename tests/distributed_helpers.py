"""Run the distributed roles (`tracepipe receiver`, `tracepipe worker`) as real subprocesses.

The config is the shipped config/distributed.yaml, with its endpoints given through the
environment as a user would (KAFKA_BROKERS, CLICKHOUSE_DSN=chdb://..., REDIS_URL), plus the
Tansu workarounds that belong in test configuration, not in product code:
- no idempotent producer (Tansu fails InitProducerId);
- one record per produce batch (Tansu's end offset is wrong after multi-record batches,
  which breaks lag figures and Faust table recovery);
- short group timeouts (joins take about half the rebalance timeout).
Auth is taken out (loopback only); tests/test_auth_distributed.py keeps it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "config" / "distributed.yaml"

TANSU_KAFKA_SETTINGS: dict[str, Any] = {
    "enable_idempotence": False,
    "compression": "none",
    "linger_ms": 0,
    "max_batch_bytes": 16,  # one record per batch
    "produce_timeout": 3.0,
    "worker_options": {
        "broker_session_timeout": 6.0,
        "broker_rebalance_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "producer_max_batch_size": 16,
        "producer_linger_ms": 0,
    },
}


def write_config(tmp: Path, *, topic: str = "otlp_spans", group: str = "tracepipe-worker", partitions: int = 4,
                 budgets: bool = False, kafka: dict[str, Any] | None = None, batch_timeout: float = 0.2) -> Path:
    """config/distributed.yaml with the test workarounds, written to tmp (placeholders kept)."""
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    k = raw["transport"]["kafka"]
    k.update(TANSU_KAFKA_SETTINGS)
    k.update({"topic": topic, "group_id": group, "partitions": partitions, "alerts_topic": f"{topic}.alerts"})
    if kafka:
        k.update(kafka)
    raw["service"]["batch"]["timeout"] = batch_timeout
    # The shipped config has auth on; these roles run on loopback and their tests send no tokens
    # (tests/test_auth_distributed.py runs the shipped auth section).
    raw.pop("auth", None)
    if not budgets:
        raw["sinks"].pop("budgets")
        raw["service"]["pipelines"]["traces"]["sinks"].remove("budgets")
    else:  # own keys per test, and a global budget whose spend the tests can compare
        raw["sinks"]["budgets"]["key_prefix"] = f"tracepipe-test:{topic}:{group}"
        raw["sinks"]["budgets"]["budgets"]["global_daily"] = {"scope": "global", "period": "day"}
    path = tmp / f"distributed-{topic}-{group}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@dataclass
class RoleProcess:
    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    api_port: int
    metrics_port: int
    grpc_port: int = 0
    http_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def otlp_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, lbl = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in lbl for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def role_env(kafka_url: str, chdb_dir: Path | None = None, redis_url: str | None = None,
             data_dir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KAFKA_BROKERS": kafka_url}
    if chdb_dir is not None:
        env["CLICKHOUSE_DSN"] = f"chdb://{chdb_dir}"
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if data_dir is not None:
        env["TRACEPIPE_DATA_DIR"] = str(data_dir)
    return env


STARTED: list[RoleProcess] = []  # every role started, so a failed test leaves none running (conftest)


def reap_roles(since: int) -> None:
    """Kill the roles started after STARTED[since] that are still running."""
    for p in STARTED[since:]:
        if p.alive():
            p.kill9()
    del STARTED[since:]


def start_role(role: str, config: Path, env: dict[str, str], log_path: Path, *, ready_timeout: float = 60,
               wait_ready: bool = True) -> RoleProcess:
    api, metrics = free_port(), free_port()
    launcher = ["-m", "pipeline.cli"] if not os.environ.get("TRACEPIPE_BENCH_PROFILE_" + role.upper()) else [
        os.environ["TRACEPIPE_BENCH_PROFILE_" + role.upper()]]
    args = [sys.executable, *launcher, role, "-c", str(config),
            "--api", f"127.0.0.1:{api}", "--metrics", f"127.0.0.1:{metrics}"]
    grpc = http = 0
    if role == "receiver":
        grpc, http = free_port(), free_port()
        args += ["--otlp-grpc", f"127.0.0.1:{grpc}", "--otlp-http", f"127.0.0.1:{http}"]
    out = open(log_path, "ab")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    out.close()
    p = RoleProcess(role, proc, log_path, api, metrics, grpc, http, env)
    STARTED.append(p)
    if wait_ready:
        wait_until_ready(p, ready_timeout)
    return p


def wait_until_ready(p: RoleProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"tracepipe {p.role} exited with {p.proc.returncode}:\n{p.log()[-5000:]}")
        try:
            status, _ = p.get("/readyz")
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    p.stop()
    raise TimeoutError(f"tracepipe {p.role} not ready after {timeout}s:\n{p.log()[-5000:]}")


_READ_ROWS = r"""
import json, sys
import clickhouse_connect
c = clickhouse_connect.get_client(dsn="chdb://" + sys.argv[1])
try:
    rows = c.query("SELECT TraceId, SpanId, ParentSpanId, CostUsd FROM tracepipe.otel_traces").result_rows
except Exception as e:
    if "UNKNOWN_DATABASE" in str(e) or "UNKNOWN_TABLE" in str(e) or "doesn't exist" in str(e):
        rows = []
    else:
        raise
print(json.dumps([list(r) for r in rows]))
"""


def read_rows(chdb_dir: Path) -> list[tuple[str, str, str, float | None]]:
    """Every stored span (TraceId, SpanId, ParentSpanId, CostUsd), read in a subprocess
    (chDB: one engine per process, and the worker must have stopped)."""
    out = subprocess.run([sys.executable, "-c", _READ_ROWS, str(chdb_dir)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"reading {chdb_dir} failed:\n{out.stderr[-3000:]}")
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]  # type: ignore[misc]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def create_topic(url: str, topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` partitions (replication 1) on the broker at `url`."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def leave_group(url: str, group: str) -> list[str]:
    """Take every member out of consumer group `group`; returns the member ids removed.

    A Tansu workaround for in-process Faust apps stopped and started again in one test: Tansu numbers a
    group's first generation 0, and aiokafka sends no LeaveGroup from generation 0 (a real Kafka group's
    first generation is 1), so a cleanly stopped app's member stays in the group. Tansu drops it only
    when a later join finds its session expired, and the rebalances until then kept a restarted app
    without partitions (tests/test_distributed_state.py timed out after 60 s in CI). Test code only:
    aiokafka's client and protocol classes are not its public API, and this test fails if they change.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.client import AIOKafkaClient, CoordinationType
    from aiokafka.protocol.group import LeaveGroupRequest

    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    members = [m[0] for resp in described for g in resp.groups if g[1] == group for m in g[5]]
    if not members:
        return []
    client = AIOKafkaClient(bootstrap_servers=url)
    await client.bootstrap()
    try:
        node = await client.coordinator_lookup(CoordinationType.GROUP, group)
        for member in members:
            resp = await client.send(node, LeaveGroupRequest(group, member))
            if resp.error_code != 0:
                raise RuntimeError(f"LeaveGroup {group}/{member} failed with error code {resp.error_code}")
    finally:
        await client.close()
    return members


async def uncommitted(url: str, group: str, topic: str, ends: dict[int, int] | None = None) -> int:
    """Messages of `topic` (every partition it has) that `group` has not committed, counted against
    `ends` (last offset per partition) or else the topic's end offsets now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=url)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    if ends is None:
        consumer = AIOKafkaConsumer(bootstrap_servers=url, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = {tp.partition: off - 1 for tp, off in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()
    behind = 0
    for tp in tps:
        committed = offsets[tp].offset if tp in offsets else -1
        behind += max(0, ends.get(tp.partition, -1) + 1 - max(committed, 0))
    return behind
