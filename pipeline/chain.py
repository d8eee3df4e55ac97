"""The chain runner: runs the configured pipelines over a batch and writes their sinks.

One `Chain` serves both runtimes. A batch taken off the transport goes through every
pipeline whose input is the receivers; a pipeline declared `from: other` takes the
output of `other`'s processors instead (so accounting sinks can sit before sampling).
`run(batch)` returns only when every sink of every pipeline acknowledged its part: that
is when the runtime may release or commit the batch.

Failures:
- A processor that raises on a batch is retried span by span; the spans it still
  raises on are dead-lettered (reason `processor_error`), the rest go on. A bad
  span never poisons its batch or stops the worker.
- A sink that fails is retried with exponential backoff (only that sink, the others
  already acked) within `service.retry`'s budget; a non-retryable `SinkError`, or a
  failure past the budget, bisects that sink's part until the refused spans are isolated
  and dead-lettered (pipeline/poison.py). Writes are keyed by `<batch_id>/<pipeline>`
  (halves `...~0`, `...~1`) so retries and redeliveries are idempotent in sinks that
  honour the key.
- Dead letters go to `chain.dead_letter` (a `DeadLetterPublisher`: the local store in
  embedded mode, the dead-letter topic in distributed mode); `replay(entry)` sends one
  back to the component that refused it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.batch_ids import derived_batch_id
from pipeline.component import Processor, Sink
from pipeline.config import RetryConfig
from pipeline.dead_letter import DeadLetter, DeadLetterPublisher
from pipeline.poison import Failure, SinkWriter
from pipeline.spans import Span, SpanBatch
from pipeline.telemetry import Telemetry


@dataclass
class PipelineRun:
    """One configured pipeline, built: its processors (own instances) and sink ids."""

    name: str
    processors: list[Processor]
    sink_ids: list[str]
    source: str | None = None  # name of the pipeline whose output this one takes
    children: list[PipelineRun] = field(default_factory=list)


class Chain:
    def __init__(
        self,
        pipelines: Sequence[PipelineRun],
        sinks: dict[str, Sink],
        telemetry: Telemetry,
        retry: RetryConfig | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        by_name = {p.name: p for p in pipelines}
        for p in pipelines:
            p.children = []
        for p in pipelines:
            if p.source is not None:
                by_name[p.source].children.append(p)
        self.roots = [p for p in pipelines if p.source is None]
        self.pipelines = list(pipelines)
        self.sinks = sinks
        self.telemetry = telemetry
        self.retry = retry or RetryConfig()
        self.log = logger or logging.getLogger("tracepipe.chain")
        self._closing = False
        self._tick_seq = itertools.count(1)
        self._tick_prefix = uuid.uuid4().hex[:12]
        self.writer = SinkWriter(sinks, telemetry, self.retry, self.log)
        # (pipeline, processor id, spans, error) refused by processors, published by the caller
        self._refused: list[tuple[str, str, SpanBatch, str]] = []

    @property
    def dead_letter(self) -> DeadLetterPublisher | None:
        """Where refused spans go; None drops them (counted). The runtime sets it."""
        return self.writer.dead_letter

    @dead_letter.setter
    def dead_letter(self, publisher: DeadLetterPublisher | None) -> None:
        self.writer.dead_letter = publisher

    @property
    def failing_sinks(self) -> dict[str, float]:
        """Sink id -> monotonic time its current run of failed writes began (for /readyz)."""
        return self.writer.failing_sinks

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        started: list[Sink] = []
        try:
            for sink in self.sinks.values():
                await sink.start()
                started.append(sink)
        except BaseException:
            for sink in started:
                await sink.close()
            raise

    def ready(self) -> tuple[bool, str]:
        not_ready = [sid for sid, s in self.sinks.items() if not s.ready()]
        return (not not_ready, "all sinks ready" if not not_ready else f"not ready: {', '.join(not_ready)}")

    async def close(self) -> None:
        self._closing = True
        for pipe in self.pipelines:
            for proc in pipe.processors:
                try:
                    proc.close()
                except Exception:
                    self.log.exception("processor %s failed to close", proc.component_id)
        for sid, sink in self.sinks.items():
            try:
                await sink.flush()
                await sink.close()
            except Exception:
                self.log.exception("sink %s failed to close", sid)

    # --- the hot path ----------------------------------------------------------------

    async def run(self, batch: SpanBatch) -> None:
        """Run every pipeline over `batch` and wait for every sink's ack."""
        writes: list[tuple[str, str, SpanBatch]] = []
        consumers = len(self.roots)
        for i, root in enumerate(self.roots):
            inp = batch if (consumers == 1 or i == consumers - 1) else batch.clone()
            self._run_pipeline(root, inp, 0, writes)
        await self._publish_refused()
        await self._write_all(writes)

    async def tick(self) -> None:
        """Give time-driven processors (tail sampling, windows) a chance to release spans.

        The runtime calls this when no batch arrived for a while."""
        empty = SpanBatch(spans=[], batch_id=f"tick-{self._tick_prefix}-{next(self._tick_seq)}")
        await self.run(empty)

    async def flush(self) -> None:
        """Release everything processors hold (shutdown) and write it."""
        writes: list[tuple[str, str, SpanBatch]] = []
        for pipe in self.pipelines:
            for idx, proc in enumerate(pipe.processors):
                try:
                    held: list[Span] = list(proc.flush())
                except Exception:
                    self.log.exception("processor %s failed to flush", proc.component_id)
                    continue
                if held:  # named by content: a flush repeated after a crash stores once (pipeline.batch_ids)
                    flush_id = derived_batch_id(f"flush-{proc.component_id}", (), held)
                    self._run_pipeline(pipe, SpanBatch(held, flush_id), idx + 1, writes)
        await self._publish_refused()
        await self._write_all(writes)

    async def replay(self, entry: DeadLetter, spans: list[Span]) -> int:
        """Send a dead letter's spans back to where they were refused: the sink alone (the
        others acked them already), or the pipeline from the processor that raised. Its
        batch id is `replay-<entry id>`, so replaying twice stores once. Returns the spans
        refused again (dead-lettered anew, `replay_of` = the entry's id)."""
        stats: dict[str, int] = {"dead": 0}
        batch = SpanBatch(spans, f"replay-{entry.id}", meta={"replay_of": entry.id, "replay_stats": stats})
        if entry.kind == "sink":
            if entry.component not in self.sinks:
                raise ValueError(f"sink {entry.component!r} is not in this configuration")
            await self.writer.write(entry.pipeline, entry.component, batch)
            return stats["dead"]
        pipe = next((p for p in self.pipelines if p.name == entry.pipeline), None)
        ids = [proc.component_id for proc in pipe.processors] if pipe is not None else []
        if pipe is None or entry.component not in ids:
            raise ValueError(f"processor {entry.component!r} of pipeline {entry.pipeline!r} is not configured")
        writes: list[tuple[str, str, SpanBatch]] = []
        self._run_pipeline(pipe, batch, ids.index(entry.component), writes)
        await self._publish_refused()
        await self._write_all(writes)
        return stats["dead"]

    async def _publish_refused(self) -> None:
        refused, self._refused = self._refused, []
        for pipeline, proc_id, part, error in refused:
            await self.writer.dead_letter_spans(pipeline, proc_id, "processor", part,
                                                Failure(False, "processor_error", error))

    def _run_pipeline(
        self, pipe: PipelineRun, batch: SpanBatch, start: int, writes: list[tuple[str, str, SpanBatch]]
    ) -> None:
        t0 = time.perf_counter()
        for proc in pipe.processors[start:]:
            batch = self._process(proc, batch, pipe.name)
        if batch.spans or not pipe.processors:
            part = SpanBatch(spans=batch.spans, batch_id=f"{batch.batch_id}/{pipe.name}", meta=batch.meta)
            for sid in pipe.sink_ids:
                writes.append((pipe.name, sid, part))
        self.telemetry.batch_duration.labels(pipe.name).observe(time.perf_counter() - t0)
        n_children = len(pipe.children)
        for i, child in enumerate(pipe.children):
            # Children mutate what they get; every child but the last works on a copy, and
            # the last only gets the original when this pipeline has no sinks of its own.
            shared_ok = i == n_children - 1 and not pipe.sink_ids
            self._run_pipeline(child, batch if shared_ok else batch.clone(), 0, writes)

    def _process(self, proc: Processor, batch: SpanBatch, pipeline: str = "") -> SpanBatch:
        t0 = time.perf_counter()
        try:
            out = proc.process(batch)
        except Exception:
            out = self._process_span_by_span(proc, batch, pipeline)
        self.telemetry.processor_duration.labels(proc.component_id).observe(time.perf_counter() - t0)
        return out

    def _process_span_by_span(self, proc: Processor, batch: SpanBatch, pipeline: str = "") -> SpanBatch:
        self.log.exception(
            "processor %s failed on a batch of %d spans; isolating the bad spans", proc.component_id, len(batch)
        )
        kept: list[Span] = []
        bad: list[Span] = []
        error = ""
        for span in batch.spans:
            try:
                kept.extend(proc.process(batch.with_spans([span])).spans)
            except Exception as e:
                bad.append(span)
                error = error or type(e).__name__
        if bad:
            self.log.error("processor %s refused %d span(s) it could not process", proc.component_id, len(bad))
            self.telemetry.processor_dropped_spans.labels(proc.component_id, "processor_error").inc(len(bad))
            refused = SpanBatch(bad, f"{batch.batch_id}/{pipeline}!{proc.component_id}", meta=batch.meta)
            self._refused.append((pipeline, proc.component_id, refused, f"{proc.component_id} raised {error}"))
        return batch.with_spans(kept)

    async def _write_all(self, writes: list[tuple[str, str, SpanBatch]]) -> None:
        if not writes:
            return
        await asyncio.gather(*(self._write(pname, sid, part) for pname, sid, part in writes))
        counted: set[str] = set()
        for pname, _sid, part in writes:
            if pname not in counted:
                counted.add(pname)
                self.telemetry.pipeline_spans.labels(pname).inc(len(part.spans))

    async def _write(self, pipeline: str, sink_id: str, batch: SpanBatch) -> None:
        await self.writer.write(pipeline, sink_id, batch)
