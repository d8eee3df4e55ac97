"""Fleet-wide anomaly windows: pane contributions through a topic keyed by the anomaly key.

In the worker, the anomaly processor only contributes (processors/anomaly.py): per batch,
its spans folded into panes per (key, pane start). This module carries them to where each
key is evaluated, once, whatever the number of workers:

- `publish` (in the chain, per batch): one JSON record per partition of the panes topic
  `<group_id>-anomaly-panes` (as many partitions as the span topic), holding the keys of that
  partition (contribution.partition_of) plus the batch's source partition and newest end time,
  so every partition's watermark hears of every source. The sends go through the worker's
  event publisher, whose `drain()` the runtime awaits before it commits the span batch: a
  committed batch's contributions are in Kafka.
- a second Faust agent of the same app consumes the panes topic (Faust's ordinary ack and
  commit: Faust flushes the table changelog before it commits) and merges each record into
  the evaluator of its partition (pipeline/anomaly/evaluator.py), whose state is the Faust
  table `anomaly-fleet/<id>`, written under that record, hence to the changelog partition the
  partition's next owner recovers. A redelivered record is ignored per (key, pane) by its
  source batch's dedup mark; alerts leave through the worker's alert path and are acked
  before the record is.
- `report_idle` (the runtime's housekeeping) names the span partitions this worker has read to
  their end, so a partition without traffic does not hold every watermark back; `report_busy`
  (the runtime, before it runs a take) withdraws that for the partitions the take brings
  messages of, for the other idle ones that have messages waiting at the broker by then (traffic
  resuming on one partition usually resumes on all: the first to be merged must not overtake the
  rest), and on a worker's first take every idle mark an earlier owner left.
- `tick_loop` closes windows by the wall clock (`idle_close`) for the partitions this worker
  owns, written under the partition's last record.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pipeline.anomaly.contribution import Panes, dedup_mark, partition_of
from pipeline.anomaly.evaluator import WindowEvaluator
from pipeline.spans import SpanBatch
from pipeline.worker.faust_compat import current_event

if TYPE_CHECKING:
    from pipeline.worker.runtime import WorkerRuntime

log = logging.getLogger("tracepipe.worker.anomaly")


def panes_topic(group_id: str) -> str:
    return f"{group_id}-anomaly-panes"


class AnomalyPaneExchange:
    """The PaneExchange of the worker (pipeline.anomaly.contribution.PaneExchange)."""

    def __init__(self, runtime: WorkerRuntime, partitions: int) -> None:
        self.runtime = runtime
        self.partitions = partitions
        self.topic = panes_topic(runtime.kcfg.group_id)
        self.processors: dict[str, Any] = {}
        self._evaluators: dict[tuple[str, int], WindowEvaluator] = {}
        self._last_event: dict[int, Any] = {}  # panes partition -> its last record (table writes of ticks)
        self._idle_reported: list[int] | None = None

    def register(self, processor: Any) -> None:
        self.processors[processor.component_id] = processor

    # --- contributing (in the chain) -------------------------------------------------

    def publish(self, processor_id: str, batch: SpanBatch, panes: Panes, max_end: int | None) -> None:
        n = self.partitions
        by_part: dict[int, dict[str, Any]] = {}
        for ks, by_start in panes.items():
            by_part.setdefault(partition_of(ks, n), {})[ks] = {str(ps): pane for ps, pane in by_start.items()}
        source = batch.meta.get("partition")
        targets = range(n) if source is not None and max_end is not None else sorted(by_part)
        events = self.runtime.events
        assert events is not None
        key = processor_id.encode()
        for q in targets:
            record = {"proc": processor_id, "batch": batch.batch_id, "src": source, "n": n, "end": max_end,
                      "panes": by_part.get(q, {})}
            events.emit_record(self.topic, q, key, json.dumps(record, separators=(",", ":")).encode())

    def report_idle(self, sources: list[int]) -> None:
        """Tell every evaluator which span partitions are caught up (when that set changed)."""
        idle = sorted(sources)
        if idle == self._idle_reported or self.runtime.events is None:
            return
        self._idle_reported = idle
        for proc_id in self.processors:
            value = json.dumps({"proc": proc_id, "idle": idle, "n": self.partitions}).encode()
            for q in range(self.partitions):
                self.runtime.events.emit_record(self.topic, q, proc_id.encode(), value)

    @property
    def idle_reported(self) -> list[int]:
        """The span partitions this worker last reported idle."""
        return list(self._idle_reported or ())

    def report_busy(self, sources: Iterable[int]) -> None:
        """Span partitions whose new messages are about to run: withdraw their idle report before
        any of their contributions goes out. Else the first of them to be merged moves the
        watermark past spans the others bring next (partitions still marked idle hold nothing
        back), and those land in closed windows. Before this worker's first report, every idle
        mark is withdrawn: an earlier owner of its partitions (a killed worker) may have left
        some that no longer hold."""
        busy = set(sources)
        reported = self._idle_reported
        if reported is not None and busy.isdisjoint(reported):
            return
        self.report_idle([s for s in reported or () if s not in busy])

    # --- evaluating (the panes agent) ------------------------------------------------

    def _evaluator(self, proc_id: str, q: int) -> WindowEvaluator:
        ev = self._evaluators.get((proc_id, q))
        if ev is None:
            ev = self._evaluators[(proc_id, q)] = self.processors[proc_id].evaluator_for(q, self.partitions)
        return ev

    async def handle(self, event: Any) -> None:
        """Merge one record into its partition's evaluator (Faust's current event: `event`)."""
        try:
            msg = json.loads(event.value)
            proc_id = msg["proc"]
        except (ValueError, TypeError, KeyError):
            log.warning("skipping a record of %s that is not a pane contribution", self.topic)
            return
        if proc_id not in self.processors:
            log.warning("pane contribution of unknown anomaly processor %r skipped", proc_id)
            return
        q = event.message.partition
        self._last_event[q] = event
        ev = self._evaluator(proc_id, q)
        dirty: dict[str, Any] = {}
        if "idle" in msg:
            ev.mark_idle(msg["idle"])
        else:
            ev.merge(msg["panes"], msg["end"], dirty, mark=dedup_mark(msg["batch"]), source=msg["src"])
        ev.advance(dirty)
        ev.write(dirty)
        await self._flush_alerts()

    async def _flush_alerts(self) -> None:
        rt = self.runtime
        if rt.events is not None:
            await rt.events.drain()
        if rt.alerts is not None:
            await rt.alerts.router.flush(rt.kcfg.produce_timeout)

    async def tick(self) -> None:
        """Close windows by the wall clock in every owned partition that had a record."""
        try:
            assigned = {tp.partition for tp in self.runtime.app.consumer.assignment() if tp.topic == self.topic}
        except Exception:
            return
        for q in sorted(assigned):
            event = self._last_event.get(q)
            if event is None:
                continue
            with current_event(event):
                for proc_id in self.processors:
                    ev = self._evaluator(proc_id, q)
                    dirty: dict[str, Any] = {}
                    ev.advance(dirty)
                    ev.write(dirty)
        await self._flush_alerts()

    async def tick_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anomaly evaluator tick failed")

    async def on_assignment_changed(self, app: Any, *args: Any, **kwargs: Any) -> None:
        """Faust's on_partitions_assigned/revoked: evaluators re-read their (recovered) state."""
        self._evaluators.clear()
        self._last_event.clear()


def add_pane_agent(app: Any, exchange: AnomalyPaneExchange) -> Any:
    topic = app.topic(exchange.topic, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")

    async def consume_panes(stream: Any) -> None:
        async for event in stream.events():
            try:
                await exchange.handle(event)
            except Exception:
                log.exception("pane contribution at %s[%d]@%d failed", exchange.topic, event.message.partition,
                              event.message.offset)
                raise

    app.on_partitions_assigned.connect(exchange.on_assignment_changed)
    app.on_partitions_revoked.connect(exchange.on_assignment_changed)
    return app.agent(topic, name="tracepipe-anomaly-panes")(consume_panes)
