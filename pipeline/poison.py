"""Poison isolation: how the chain writes one batch to one sink without ever waiting forever.

`SinkWriter.write(pipeline, sink_id, batch)`:

1. Write with exponential backoff (`service.retry.initial_backoff` .. `max_backoff`) while
   the sink fails *retryably* (network, timeouts, a busy server), within the retry budget
   (`service.retry.max_attempts` writes and `max_elapsed` seconds).
2. A non-retryable refusal (`SinkError(retryable=False)`: type, overflow, parse, constraint
   errors), or a retryable failure past the budget, starts the isolation: the batch (minus
   the leading spans the sink reported stored) is split in halves, each half written once
   (one retry for a retryable failure); halves that fail are split again, down to single
   spans (when both halves of a split fail retryably the sink is down, not a span bad: the
   halves are kept whole). Every half gets its own batch id, `<parent id>~<0|1>` (and `<id>@<n>` for the rest
   after `n` stored spans), so its deduplication token is the same on every redelivery.
3. The spans still refused alone go to the dead-letter publisher with the reason, the sink
   id and the time, counted in `tracepipe_dead_letter_spans_total{sink,reason}`. When the
   isolation itself runs past `max_elapsed`, what is left undecided is dead-lettered whole
   (reason `retries_exhausted`), so a sink that is down for good cannot hold a batch forever.

Only the failing sink is written again: sinks that acked the batch are not touched.
One bad span among n costs about 2*log2(n) extra writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pipeline.component import Sink, SinkError
from pipeline.config import RetryConfig
from pipeline.dead_letter import DeadLetter, DeadLetterPublisher, reason_label
from pipeline.spans import Span, SpanBatch
from pipeline.telemetry import Telemetry

DEFAULT_ISOLATION_SECONDS = 300.0


@dataclass
class Failure:
    """Why a write failed: `reason` is a dead-letter reason, `detail` the error (no span data)."""

    retryable: bool
    reason: str
    detail: str
    stored: int = 0


def failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, SinkError):
        reason = "retries_exhausted" if exc.retryable else reason_label(exc.reason)
        return Failure(exc.retryable, reason, str(exc), max(0, exc.stored))
    return Failure(True, "retries_exhausted", type(exc).__name__)


def encode_request(spans: list[Span]) -> bytes:
    from pipeline.otlp.encode import encode_spans

    return encode_spans(spans).SerializeToString()


class SinkWriter:
    """Writes batches to sinks with retries, isolation and dead letters (see module doc)."""

    def __init__(
        self,
        sinks: dict[str, Sink],
        telemetry: Telemetry,
        retry: RetryConfig,
        logger: logging.Logger,
        dead_letter: DeadLetterPublisher | None = None,
    ) -> None:
        self.sinks = sinks
        self.telemetry = telemetry
        self.retry = retry
        self.log = logger
        self.dead_letter = dead_letter
        self.writes = 0  # sink.write calls made (tests and benches read it)
        self.failing_sinks: dict[str, float] = {}  # sink id -> monotonic time its current failure began
        self._sleep = asyncio.sleep

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, sink_id: str, batch: SpanBatch) -> Failure | None:
        sink = self.sinks[sink_id]
        t = self.telemetry
        t0 = time.perf_counter()
        self.writes += 1
        try:
            await sink.write(batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            t.sink_send_failed_spans.labels(sink_id).inc(len(batch.spans))
            self.failing_sinks.setdefault(sink_id, time.monotonic())
            f = failure_of(e)
            if not isinstance(e, SinkError):
                self.log.warning("sink %s raised %s", sink_id, type(e).__name__, exc_info=True)
            return f
        t.sink_write_duration.labels(sink_id).observe(time.perf_counter() - t0)
        t.sink_sent_spans.labels(sink_id).inc(len(batch.spans))
        self.failing_sinks.pop(sink_id, None)
        return None

    # --- the write ------------------------------------------------------------------------

    async def write(self, pipeline: str, sink_id: str, batch: SpanBatch) -> int:
        """Store `batch` in the sink or dead-letter what it refuses; the dead-lettered count."""
        failure = await self._write_with_budget(pipeline, sink_id, batch)
        if failure is None:
            return 0
        rest = batch
        if failure.stored:
            n = min(failure.stored, len(batch.spans))
            rest = SpanBatch(batch.spans[n:], f"{batch.batch_id}@{n}", meta=batch.meta)
        self.log.error("sink %s refused %d spans of pipeline %s (%s: %s); isolating the spans it refuses",
                       sink_id, len(rest.spans), pipeline, failure.reason, failure.detail)
        budget = self.retry.max_elapsed or DEFAULT_ISOLATION_SECONDS
        deadline = time.monotonic() + budget
        return await self._isolate(pipeline, sink_id, rest, failure, deadline)

    async def _write_with_budget(self, pipeline: str, sink_id: str, batch: SpanBatch) -> Failure | None:
        r = self.retry
        backoff = r.initial_backoff
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            failure = await self._attempt(sink_id, batch)
            if failure is None:
                return None
            if not failure.retryable:
                return failure
            elapsed = time.monotonic() - started
            out_of_budget = (r.max_attempts is not None and attempt >= r.max_attempts) or (
                r.max_elapsed is not None and elapsed + backoff > r.max_elapsed
            )
            if out_of_budget:
                self.log.error("sink %s kept failing for %.1fs (%d attempts): %s", sink_id, elapsed, attempt,
                               failure.detail)
                return failure
            self.log.warning("sink %s failed (attempt %d), retrying in %.1fs: %s",
                             sink_id, attempt, backoff, failure.detail)
            self.telemetry.sink_retries.labels(sink_id).inc()
            await self._sleep(backoff)
            backoff = min(backoff * 2, r.max_backoff)

    async def _write_once_or_twice(self, sink_id: str, batch: SpanBatch) -> Failure | None:
        failure = await self._attempt(sink_id, batch)
        if failure is not None and failure.retryable:
            self.telemetry.sink_retries.labels(sink_id).inc()
            await self._sleep(self.retry.initial_backoff)
            failure = await self._attempt(sink_id, batch)
        return failure

    async def _isolate(self, pipeline: str, sink_id: str, part: SpanBatch, failure: Failure, deadline: float) -> int:
        if not part.spans:
            return 0
        if len(part.spans) == 1 or time.monotonic() >= deadline:
            if len(part.spans) > 1:
                failure = Failure(failure.retryable, "retries_exhausted", failure.detail)
            await self.dead_letter_spans(pipeline, sink_id, "sink", part, failure)
            return len(part.spans)
        mid = len(part.spans) // 2
        failed: list[tuple[SpanBatch, Failure]] = []
        for pos, spans in enumerate((part.spans[:mid], part.spans[mid:])):
            half = SpanBatch(spans, f"{part.batch_id}~{pos}", meta=part.meta)
            f = await self._write_once_or_twice(sink_id, half)
            if f is None:
                continue
            if f.stored:
                n = min(f.stored, len(spans))
                half = SpanBatch(spans[n:], f"{half.batch_id}@{n}", meta=part.meta)
            failed.append((half, f))
        if len(failed) == 2 and all(f.retryable for _, f in failed):
            # Both halves fail retryably: the sink is down, not a span bad. Splitting further
            # would cost a write per span for nothing: keep each half whole.
            for half, f in failed:
                await self.dead_letter_spans(pipeline, sink_id, "sink", half,
                                             Failure(True, "retries_exhausted", f.detail))
            return sum(len(h.spans) for h, _ in failed)
        dead = 0
        for half, f in failed:
            dead += await self._isolate(pipeline, sink_id, half, f, deadline)
        return dead

    # --- dead letters ---------------------------------------------------------------------

    async def dead_letter_spans(
        self, pipeline: str, component: str, kind: str, batch: SpanBatch, failure: Failure
    ) -> None:
        """Hand refused spans to the dead-letter publisher (or count them dropped without one)."""
        n = len(batch.spans)
        t = self.telemetry
        reason = reason_label(failure.reason)
        if self.dead_letter is None:
            self.log.error("%s refused %d span(s) (%s) and no dead-letter store is configured; dropped",
                           component, n, reason)
            t.dropped_spans.labels("sink_rejected" if kind == "sink" else "processor_error").inc(n)
            return
        stats: Any = batch.meta.get("replay_stats")
        try:
            entry = DeadLetter(
                request=encode_request(batch.spans),
                spans=n,
                reason=reason,
                component=component,
                kind=kind,
                pipeline=pipeline,
                error=failure.detail[:2000],
                batch_id=batch.batch_id,
                at=time.time(),
                replay_of=batch.meta.get("replay_of"),
            )
            await self.dead_letter.publish(entry)
        except Exception as e:
            self.log.error("could not keep %d dead-lettered span(s) of %s: %s; dropped", n, component,
                           type(e).__name__)
            t.dropped_spans.labels("dead_letter_failed").inc(n)
            return
        t.dead_letter_spans.labels(component, reason).inc(n)
        if isinstance(stats, dict):
            stats["dead"] = stats.get("dead", 0) + n
        self.log.error("dead-lettered %d span(s) refused by %s (%s) as %s", n, component, reason, entry.id)
