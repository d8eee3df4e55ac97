"""The embedded dead-letter store: one SQLite file, `<data_dir>/dead-letter/dead-letter.sqlite`.

SQLite in WAL journal mode with `synchronous=FULL`: an entry is on disk when `publish`
returns, so it survives kill -9 and power loss. Readers (the CLI while a pipeline runs)
open the same file; SQLite handles the concurrency. All calls run on one thread of their
own, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.dead_letter import DeadLetter

DIR_NAME = "dead-letter"
FILE_NAME = "dead-letter.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    spans INTEGER NOT NULL,
    reason TEXT NOT NULL,
    component TEXT NOT NULL,
    kind TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    error TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    replay_of TEXT,
    status TEXT NOT NULL DEFAULT 'new',
    replayed_at REAL,
    extra TEXT NOT NULL DEFAULT '{}',
    request BLOB NOT NULL
)
"""
_COLUMNS = ("id", "at", "spans", "reason", "component", "kind", "pipeline", "error", "batch_id", "replay_of",
            "status", "replayed_at", "extra")


def store_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / DIR_NAME / FILE_NAME


def new_id() -> str:
    """Sortable by time: milliseconds then randomness."""
    return f"dl-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"


class LocalDeadLetterStore:
    """Dead letters in a SQLite file (see module doc). A `DeadLetterPublisher`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dead-letter")
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @classmethod
    def under(cls, data_dir: Path | str) -> LocalDeadLetterStore:
        return cls(store_path(data_dir))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run a sync method of this store on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- sync API (the CLI uses it directly) ---------------------------------------------

    def add(self, entry: DeadLetter) -> str:
        if not entry.id:
            entry.id = new_id()
        row = (entry.id, entry.at, entry.spans, entry.reason, entry.component, entry.kind, entry.pipeline,
               entry.error, entry.batch_id, entry.replay_of, entry.status, entry.replayed_at,
               json.dumps(entry.extra), entry.request)
        with self._lock:
            self._conn().execute(
                f"INSERT INTO dead_letters ({', '.join(_COLUMNS)}, request) VALUES ({', '.join('?' * len(row))})",
                row,
            )
        return entry.id

    def list(self, *, status: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            rows = self._conn().execute(
                f"SELECT {', '.join(_COLUMNS)} FROM dead_letters {where} ORDER BY id LIMIT ?", [*args, limit]
            ).fetchall()
        return [_entry(r, b"") for r in rows]

    def get(self, entry_id: str) -> DeadLetter | None:
        with self._lock:
            row = self._conn().execute(
                f"SELECT {', '.join(_COLUMNS)}, request FROM dead_letters WHERE id = ?", (entry_id,)
            ).fetchone()
        return None if row is None else _entry(row[:-1], row[-1])

    def mark(self, entry_id: str, status: str) -> None:
        with self._lock:
            self._conn().execute(
                "UPDATE dead_letters SET status = ?, replayed_at = ? WHERE id = ?", (status, time.time(), entry_id)
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._conn().execute("SELECT status, sum(spans) FROM dead_letters GROUP BY status").fetchall()
        return {s: int(n) for s, n in rows}

    def close_sync(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- DeadLetterPublisher ---------------------------------------------------------------

    async def publish(self, entry: DeadLetter) -> None:
        await self.run(self.add, entry)

    async def close(self) -> None:
        await self.run(self.close_sync)
        self._executor.shutdown(wait=True)


def _entry(row: Any, request: bytes) -> DeadLetter:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["extra"] = json.loads(d["extra"] or "{}")
    return DeadLetter(request=bytes(request), **d)
