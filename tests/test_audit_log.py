"""The audit log file: append-only JSONL, bounded by size and age, read back newest first."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.audit import AuditLog


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def _write(log: AuditLog, n: int, *, tenant: str = "acme", first: int = 0) -> None:
    for i in range(first, first + n):
        log.write(log.entry(token_id=f"tok{i % 3}", tenant=tenant, method="GET", route="/api/traces/{trace_id}",
                            params={"trace_id": f"{i:032x}"}, query={"x": "y" * 1000}, status=200))


def test_the_log_rotates_past_max_bytes_and_keeps_max_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, max_files=2)
    _write(log, 200)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    entries = log.query(limit=1000)
    # Newest first, and only what the kept files hold (the oldest were rotated away).
    numbers = [int(e["params"]["trace_id"], 16) for e in entries]
    assert numbers == sorted(numbers, reverse=True) and numbers[0] == 199 and 0 not in numbers
    assert all(len(e["query"]["x"]) == 257 for e in entries)  # values cut to 256 characters (+ "…")


def test_rotated_files_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    clock = Clock()
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, max_files=5, retention_days=90, clock=clock)
    _write(log, 30)
    assert (tmp_path / "audit.jsonl.1").exists()
    clock.t += 100 * 86400
    _write(log, 30, first=1000)  # rotating again expires the files written "100 days ago"
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "audit.jsonl")
    kept = [json.loads(line) for p in tmp_path.iterdir() for line in p.read_text().splitlines()]
    assert all(int(e["params"]["trace_id"], 16) >= 1000 for e in kept) and len(rotated) <= 5


def test_query_filters_by_since_token_and_tenant_and_skips_a_torn_line(tmp_path: Path) -> None:
    clock = Clock()
    log = AuditLog(tmp_path / "audit.jsonl", clock=clock)
    _write(log, 3, tenant="old")
    clock.t += 7200
    _write(log, 6, tenant="acme", first=10)
    _write(log, 2, tenant="globex", first=20)
    with open(tmp_path / "audit.jsonl", "a") as f:
        f.write('{"time": "torn')
    assert {e["tenant"] for e in log.query(since_s=3600)} == {"acme", "globex"}
    assert [e["params"]["trace_id"][-2:] for e in log.query(tenant="globex")] == ["15", "14"]
    assert {e["token_id"] for e in log.query(token="tok1")} == {"tok1"} and len(log.query(token="tok1")) == 3
    assert len(log.query(limit=2)) == 2
