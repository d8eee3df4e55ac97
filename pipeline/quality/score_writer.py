"""The quality processor's similarities as score rows (`source: quality`), next to the spans.

The processor scores a sample of answers in a background pool and applies each result on a
later `process()` call, after the span itself was stored; this writer turns those results into
`quality.similarity` scores in `tracepipe_scores`, so they show on the trace (`traces show`, the
trace API, the UI) and in `tracepipe quality --by ...` next to the scores users and evaluators post.

`record()` never blocks the chain: rows wait in a bounded buffer (`max_pending`; past it a row is
dropped) and a background task writes them in one insert every `interval` seconds, and once more at
shutdown; a failed write keeps its rows for the next one. Rows are derived data, not acknowledged
input: a crash loses at most the rows of the last interval, and the same result recorded again after
a restart keeps its score id (`derived_score_id`), its insert deduplicated on those ids.

Every row dropped is counted in `tracepipe_quality_score_rows_dropped_total{reason}`
(pipeline/quality/metrics.py): `queue_full` (the buffer was full), `insert_failed` (still unwritten
when the last write at shutdown failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.quality.metrics import quality_metrics
from pipeline.query.scores import Score, insert_scores

log = logging.getLogger("tracepipe.quality")


DROP_REASONS = ("queue_full", "insert_failed")


class QualityScoreWriter:
    """`registry`: the process's Telemetry registry, where the dropped rows are counted (None: only
    in `dropped`)."""

    def __init__(self, queries: Any, *, registry: CollectorRegistry | None = None, interval: float = 1.0,
                 max_pending: int = 10_000, max_rows: int = 5_000) -> None:
        self.queries = queries
        self.interval = interval
        self.max_rows = max_rows
        self._pending: deque[tuple[Score, str]] = deque()
        self._max_pending = max_pending
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.written = 0
        self._task: asyncio.Task[None] | None = None
        m = quality_metrics(registry).score_rows_dropped if registry is not None else None
        self._m_dropped = {r: m.labels(r) for r in DROP_REASONS} if m is not None else {}

    def _drop(self, reason: str, n: int) -> None:
        self.dropped[reason] += n
        if reason in self._m_dropped:
            self._m_dropped[reason].inc(n)

    def record(self, score: Score, tenant: str) -> None:
        """Queue one derived score for the next write (dropped and counted when the buffer is full)."""
        if len(self._pending) >= self._max_pending:
            self._drop("queue_full", 1)
            return
        self._pending.append((score, tenant))
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: written by flush()
                self._task = asyncio.get_running_loop().create_task(self._run(), name="tracepipe-quality-scores")

    async def flush(self) -> None:
        """Write what is queued; a failed write keeps the rows for the next attempt."""
        while self._pending:
            rows = [self._pending.popleft() for _ in range(min(self.max_rows, len(self._pending)))]
            try:
                await insert_scores(self.queries, rows)
            except Exception as e:
                self._pending.extendleft(reversed(rows))
                log.warning("quality scores: write of %d row(s) failed (%s); retrying", len(rows), type(e).__name__)
                return
            self.written += len(rows)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self.flush()
        if self._pending:
            self._drop("insert_failed", len(self._pending))
            self._pending.clear()
        if any(self.dropped.values()):
            log.warning("quality scores: row(s) dropped: %d (buffer full), %d (unwritten at shutdown)",
                        self.dropped["queue_full"], self.dropped["insert_failed"])
