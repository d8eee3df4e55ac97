"""The audit log: every read and delete through the query API, who made it, and how it ended.

One JSON object per line in `<data_dir>/audit/audit.jsonl` (or `service.audit.path`), appended and
fsynced before the request's answer leaves, so an acknowledged delete is on record:

    {"time": "2026-12-01T22:04:05.123Z", "ts": 1796162645.123, "token_id": "3f2a9c0d1e4b",
     "tenant": "acme", "method": "DELETE", "route": "/api/users/{id}", "params": {"id": "u-42"},
     "query": {}, "status": 200}

`token_id` is the first 12 hex digits of the token's SHA-256 (never the token: tokens travel in
the Authorization header, which is not recorded); route templates, not raw paths, name what was
asked. Bounded: past `max_bytes` the file rotates to `audit.jsonl.1` (older ones shift up to
`max_files`, the oldest is deleted), and rotated files older than `retention_days` are deleted.
`query(...)` reads the current and rotated files, newest first; `tracepipe audit` and
`GET /api/audit` use it, and the CLI reads the files itself when no pipeline runs (no lock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline.component import ComponentConfig

log = logging.getLogger("tracepipe.audit")

AUDIT_FILE = "audit.jsonl"
MAX_VALUE_CHARS = 256  # recorded ids and parameters are cut to this length


class AuditConfig(ComponentConfig):
    enabled: bool = Field(True, description="Record every /api/ read and delete in the audit log.")
    path: str | None = Field(None, description="The log file; default <service.data_dir>/audit/audit.jsonl.")
    max_bytes: int = Field(16 * 1024 * 1024, ge=4096, description="The file rotates when it passes this size.")
    max_files: int = Field(5, ge=1, description="Rotated files kept (audit.jsonl.1 .. .N); older ones are deleted.")
    retention_days: int | None = Field(
        90, ge=1, description="Rotated files whose newest entry is older than this are deleted; null keeps them."
    )


def _cut(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """An append-only, size-bounded JSONL audit log (writes on one thread, off the event loop)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        max_files: int = 5,
        retention_days: int | None = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.retention_days = retention_days
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self.failures = 0

    @classmethod
    def from_config(cls, cfg: AuditConfig, data_dir: str | Path) -> AuditLog:
        path = Path(cfg.path) if cfg.path else Path(data_dir) / "audit" / AUDIT_FILE
        return cls(path, max_bytes=cfg.max_bytes, max_files=cfg.max_files, retention_days=cfg.retention_days)

    # --- writing ---------------------------------------------------------------------

    def entry(
        self,
        *,
        token_id: str,
        tenant: str,
        method: str,
        route: str,
        params: dict[str, Any],
        query: dict[str, Any],
        status: int,
    ) -> dict[str, Any]:
        now = self.clock()
        return {
            "time": _iso(now),
            "ts": round(now, 3),
            "token_id": _cut(token_id),
            "tenant": _cut(tenant),
            "method": method,
            "route": _cut(route),
            "params": {_cut(k): _cut(v) for k, v in params.items()},
            "query": {_cut(k): _cut(v) for k, v in query.items()},
            "status": int(status),
        }

    def write(self, entry: dict[str, Any]) -> None:
        """Append one entry durably (blocking)."""
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def record(self, **fields: Any) -> None:
        """Append an entry built from `fields` (see `entry`); a failure is logged and counted, the
        request it describes is not failed for it."""
        entry = self.entry(**fields)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.write, entry)
        except OSError as e:
            self.failures += 1
            log.error("audit: cannot write %s (%s)", self.path, type(e).__name__)

    def _rotated(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _rotate(self) -> None:
        oldest = self._rotated(self.max_files)
        if oldest.exists():
            oldest.unlink()
        for i in range(self.max_files - 1, 0, -1):
            src = self._rotated(i)
            if src.exists():
                os.replace(src, self._rotated(i + 1))
        os.replace(self.path, self._rotated(1))
        self._expire()

    def _expire(self) -> None:
        if self.retention_days is None:
            return
        cutoff = self.clock() - self.retention_days * 86400
        for i in range(1, self.max_files + 1):
            p = self._rotated(i)
            if p.exists() and p.stat().st_mtime < cutoff:
                p.unlink()

    # --- reading ---------------------------------------------------------------------

    def _files_newest_first(self) -> Iterator[Path]:
        if self.path.exists():
            yield self.path
        for i in range(1, self.max_files + 1):
            p = self._rotated(i)
            if p.exists():
                yield p

    def query(
        self,
        *,
        since_s: float | None = None,
        token: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Entries newest first, at most `limit`, optionally since `since_s` seconds ago, of one token
        id and/or one tenant (blocking)."""
        cutoff = None if since_s is None else self.clock() - since_s
        out: list[dict[str, Any]] = []
        for p in self._files_newest_first():
            try:
                lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in reversed(lines):
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a crash
                if cutoff is not None and float(e.get("ts", 0)) < cutoff:
                    return out  # files are in time order: nothing older can match
                if token is not None and e.get("token_id") != token:
                    continue
                if tenant is not None and e.get("tenant") != tenant:
                    continue
                out.append(e)
                if len(out) >= limit:
                    return out
        return out

    async def aquery(self, **kwargs: Any) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: self.query(**kwargs))

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
