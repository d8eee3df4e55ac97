"""The embedded transport: a bounded queue between receivers and the worker, optionally durable.

Capacity is counted in spans and covers both waiting and in-flight spans, so while a
sink is stalled the queue fills and receivers answer with retryable codes instead of
buffering without bound. Nothing is dropped silently: an offer either gets in or is
refused, and the receiver tells its client.

With a write-ahead log (pipeline/transport/wal.py, the embedded default) an offer is
accepted only once the request's bytes are in the log (fsynced per its policy); batch ids
are then derived from the log position (`wal-<log id>-<first seq>-<last seq>`), so a replay
after a crash produces the same sink dedup tokens and budget keys as the first attempt.

Bounded time, cancellation safety: no lock is held across an await. Capacity is checked and
reserved synchronously (one event loop), waiting for room is a plain future with a deadline
(`asyncio.wait`, which never cancels what it waits on), and a cancelled waiter only removes
its own future. An offer therefore answers within its `timeout` (plus the log's fsync, itself
bounded by `durable_timeout`) whatever the worker or sinks do.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.telemetry import Telemetry
from pipeline.transport.wal import WalFull, WalTooLarge, WriteAheadLog, parse_batch_id

log = logging.getLogger("tracepipe.transport.memory")


class Offer(enum.Enum):
    ACCEPTED = "accepted"
    FULL = "queue_full"  # retry later
    TOO_LARGE = "too_large"  # can never fit: larger than the whole queue
    CLOSED = "closed"  # shutting down
    UNAVAILABLE = "transport_unavailable"  # the transport (e.g. Kafka) cannot take data now; retry later


@dataclass
class QueuedRequest:
    request: ExportTraceServiceRequest
    spans: int
    enqueued_at: float
    seq: int = -1  # position in the write-ahead log, -1 without one


@dataclass
class TakenBatch:
    """Requests taken together off the queue; `release` them once every sink acked."""

    batch_id: str
    items: list[QueuedRequest] = field(default_factory=list)

    @property
    def spans(self) -> int:
        return sum(item.spans for item in self.items)

    @property
    def oldest_enqueued_at(self) -> float:
        return min((item.enqueued_at for item in self.items), default=time.monotonic())


def _wake(waiters: deque[asyncio.Future[None]], all_: bool = True) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            if not all_:
                return


async def _wait(waiters: deque[asyncio.Future[None]], timeout: float | None) -> None:
    """Wait for a wake-up or `timeout`; never raises TimeoutError, safe to cancel."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.append(fut)
    try:
        await asyncio.wait((fut,), timeout=timeout)
    finally:
        if not fut.done():
            fut.cancel()
            with contextlib.suppress(ValueError):
                waiters.remove(fut)


class MemoryTransport:
    """Bounded queue of OTLP export requests, counted in spans."""

    name = "memory"
    accepts_raw = True  # offer(raw=...) stores a receiver's protobuf bytes as they are

    def __init__(
        self,
        capacity_spans: int,
        telemetry: Telemetry,
        wal: WriteAheadLog | None = None,
        durable_timeout: float = 0.5,
    ) -> None:
        if capacity_spans <= 0:
            raise ValueError("capacity_spans must be > 0")
        self.capacity = capacity_spans
        self.wal = wal
        self.durable_timeout = durable_timeout
        self._queue: deque[QueuedRequest] = deque()
        self._replay: deque[TakenBatch] = deque()
        self._queued = 0  # spans waiting (not taken)
        self._reserved = 0  # spans queued or in flight
        self._closed = False
        self._room: deque[asyncio.Future[None]] = deque()
        self._items: deque[asyncio.Future[None]] = deque()
        self._prefix = uuid.uuid4().hex[:12]
        self._seq = 0
        self._released: dict[str, tuple[int, int]] = {}  # released while a processor still held spans
        self._telemetry = telemetry
        telemetry.queue_capacity.labels(self.name).set(capacity_spans)
        telemetry.queue_size.labels(self.name).set(0)

    # --- state -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._reserved

    @property
    def waiting(self) -> int:
        """Spans queued (or to be replayed) and not yet taken."""
        return self._queued + sum(b.spans for b in self._replay)

    @property
    def closed(self) -> bool:
        return self._closed

    def ready(self) -> bool:
        return not self._closed

    def _gauge(self) -> None:
        self._telemetry.queue_size.labels(self.name).set(self._reserved)

    # --- replay ----------------------------------------------------------------------

    def load_replay(self) -> int:
        """Open the write-ahead log and queue what it still holds; returns the spans queued.

        Replayed spans count against capacity (new offers wait or are refused until they drain)."""
        if self.wal is None:
            return 0
        from pipeline.otlp.validate import count_spans

        now = time.monotonic()
        total = 0
        for rb in self.wal.open():
            items = []
            for seq, payload in rb.records:
                try:
                    req = ExportTraceServiceRequest.FromString(payload)
                except Exception:  # CRC passed but not protobuf: cannot happen unless written by others
                    log.error("wal: record %d is not an ExportTraceServiceRequest; skipped", seq)
                    self.wal.mark_done(seq, seq)
                    continue
                items.append(QueuedRequest(req, count_spans(req), now, seq))
            if not items:
                continue
            spans = sum(i.spans for i in items)
            total += spans
            self._reserved += spans
            if rb.taken and len(items) == len(rb.records):
                self._replay.append(TakenBatch(self._wal_id(items[0].seq, items[-1].seq), items))
            else:
                self._queue.extend(items)
                self._queued += spans
        self._gauge()
        return total

    def _wal_id(self, first: int, last: int) -> str:
        assert self.wal is not None
        return f"wal-{self.wal.log_id}-{first}-{last}"

    # --- offer -----------------------------------------------------------------------

    def _fits(self, spans: int, nbytes: int) -> bool:
        if self._reserved + spans > self.capacity:
            return False
        return self.wal is None or self.wal.has_room(nbytes)

    async def offer(
        self, request: ExportTraceServiceRequest, spans: int, timeout: float = 0.0, raw: bytes | None = None
    ) -> Offer:
        """Enqueue a request, waiting up to `timeout` seconds for room (and for the log's fsync).
        `raw`: protobuf bytes equal to `request`, logged instead of serialising it again."""
        if self._closed:
            return Offer.CLOSED
        if spans > self.capacity:
            return Offer.TOO_LARGE
        loop = asyncio.get_running_loop()
        start = loop.time()
        payload = b""
        if self.wal is not None:
            payload = raw if raw is not None else request.SerializeToString()
            if self.wal.record_size(len(payload)) > self.wal.max_bytes:
                return Offer.TOO_LARGE
        deadline = start + timeout
        while not self._fits(spans, len(payload)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return Offer.FULL
            await _wait(self._room, remaining)
            if self._closed:
                return Offer.CLOSED
        # From here to the append nothing awaits: the check above still holds.
        seq = -1
        if self.wal is not None:
            try:
                seq = self.wal.append(payload)
            except WalFull:
                return Offer.FULL
            except WalTooLarge:
                return Offer.TOO_LARGE
        self._queue.append(QueuedRequest(request, spans, time.monotonic(), seq))
        self._queued += spans
        self._reserved += spans
        self._gauge()
        _wake(self._items)
        if self.wal is not None:
            # The request is queued (capacity is freed when its batch is released, whatever
            # happens to this caller); the client is answered once the log is durable.
            limit = max(deadline - loop.time(), self.durable_timeout)
            try:
                await asyncio.wait_for(self.wal.durable(), limit)
            except TimeoutError:
                log.warning("wal fsync took more than %.2fs; answering unavailable", limit)
                return Offer.UNAVAILABLE
            except OSError:
                log.exception("wal fsync failed; answering unavailable")
                return Offer.UNAVAILABLE
        return Offer.ACCEPTED

    # --- take / release --------------------------------------------------------------

    async def take(self, max_spans: int, max_wait: float, idle_timeout: float | None = None) -> TakenBatch | None:
        """Take up to `max_spans` spans (at least one request), waiting up to `max_wait`
        seconds for the batch to fill once the first request is there. Returns None when
        the transport is closed and drained; an empty batch when nothing arrived within
        `idle_timeout` seconds (when given). Cancelling it never loses a request."""
        loop = asyncio.get_running_loop()
        if self._replay:
            return self._replay.popleft()
        idle_deadline = None if idle_timeout is None else loop.time() + idle_timeout
        while not self._queue:
            if self._closed:
                return None
            remaining = None if idle_deadline is None else idle_deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return TakenBatch(batch_id="")
            await _wait(self._items, remaining)
            if self._replay:
                return self._replay.popleft()
        if self._queued < max_spans and not self._closed and max_wait > 0:
            deadline = loop.time() + max_wait
            while not self._closed and self._queued < max_spans:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await _wait(self._items, remaining)
        if not self._queue:  # taken meanwhile by another taker
            return None if self._closed else TakenBatch(batch_id="")
        items: list[QueuedRequest] = []
        total = 0
        while self._queue and (not items or total + self._queue[0].spans <= max_spans):
            item = self._queue.popleft()
            items.append(item)
            total += item.spans
        self._queued -= total
        if self.wal is not None:
            first, last = items[0].seq, items[-1].seq
            try:
                self.wal.mark_taken(first, last)
            except OSError:  # e.g. disk full: process it anyway; a crash replay may regroup these records
                log.exception("wal: could not record batch %d-%d as taken", first, last)
            return TakenBatch(batch_id=self._wal_id(first, last), items=items)
        self._seq += 1
        return TakenBatch(batch_id=f"{self._prefix}-{self._seq}", items=items)

    async def persist_taken(self) -> None:
        """Wait until the batches taken so far are recorded durably (call before processing)."""
        if self.wal is not None:
            await self.wal.durable()

    async def release(self, batch: TakenBatch, held: set[str] | frozenset[str] = frozenset()) -> None:
        """Free the capacity a processed batch held. `held`: batch ids processors still hold spans of;
        the log keeps such a batch until `collect` finds it no longer held."""
        self._reserved -= batch.spans
        self._gauge()
        _wake(self._room)
        if self.wal is not None and batch.items:
            rng = parse_batch_id(batch.batch_id)
            if rng is not None:
                self._released[batch.batch_id] = rng
            self.collect(held)

    def collect(self, held: set[str] | frozenset[str] = frozenset()) -> None:
        """Mark released batches no processor holds any more as done in the log (segments go)."""
        if self.wal is None or not self._released:
            return
        for bid in [b for b in self._released if b not in held]:
            first, last = self._released[bid]
            try:
                self.wal.mark_done(first, last)
            except OSError:  # e.g. disk full: the batch stays undone (replayed, deduplicated); retried later
                log.exception("wal: could not record batch %s as done", bid)
                break
            del self._released[bid]
        _wake(self._room)  # deleted segments may have made room

    async def close(self) -> None:
        """Refuse new offers; `take` drains what is queued, then returns None."""
        self._closed = True
        _wake(self._room)
        _wake(self._items)

    async def close_log(self) -> None:
        if self.wal is not None:
            await self.wal.close()
