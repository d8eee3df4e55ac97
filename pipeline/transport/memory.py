"""The embedded transport: a bounded in-process queue between receivers and the worker.

Capacity is counted in spans and covers both waiting and in-flight spans, so while a
sink is stalled the queue fills and receivers answer with retryable codes instead of
buffering without bound. Nothing is dropped silently: an offer either gets in or is
refused, and the receiver tells its client.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.telemetry import Telemetry


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


class MemoryTransport:
    """Bounded queue of OTLP export requests, counted in spans."""

    name = "memory"

    def __init__(self, capacity_spans: int, telemetry: Telemetry) -> None:
        if capacity_spans <= 0:
            raise ValueError("capacity_spans must be > 0")
        self.capacity = capacity_spans
        self._queue: deque[QueuedRequest] = deque()
        self._reserved = 0  # spans queued or in flight
        self._closed = False
        self._cond = asyncio.Condition()
        self._prefix = uuid.uuid4().hex[:12]
        self._seq = 0
        self._telemetry = telemetry
        telemetry.queue_capacity.labels(self.name).set(capacity_spans)
        telemetry.queue_size.labels(self.name).set(0)

    @property
    def size(self) -> int:
        return self._reserved

    @property
    def closed(self) -> bool:
        return self._closed

    def ready(self) -> bool:
        return not self._closed

    async def offer(self, request: ExportTraceServiceRequest, spans: int, timeout: float = 0.0) -> Offer:
        """Enqueue a request, waiting up to `timeout` seconds for room."""
        if self._closed:
            return Offer.CLOSED
        if spans > self.capacity:
            return Offer.TOO_LARGE
        async with self._cond:
            if self._reserved + spans > self.capacity:
                if timeout <= 0:
                    return Offer.FULL
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: self._closed or self._reserved + spans <= self.capacity),
                        timeout,
                    )
                except TimeoutError:
                    return Offer.FULL
                if self._closed:
                    return Offer.CLOSED
            self._queue.append(QueuedRequest(request, spans, time.monotonic()))
            self._reserved += spans
            self._telemetry.queue_size.labels(self.name).set(self._reserved)
            self._cond.notify_all()
        return Offer.ACCEPTED

    async def take(self, max_spans: int, max_wait: float) -> TakenBatch | None:
        """Take up to `max_spans` spans (at least one request), waiting up to `max_wait`
        seconds for the batch to fill once the first request is there. Returns None when
        the transport is closed and drained."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or bool(self._queue))
            if not self._queue:
                return None
            queued = sum(item.spans for item in self._queue)
            if queued < max_spans and not self._closed and max_wait > 0:
                deadline = time.monotonic() + max_wait
                while not self._closed and sum(i.spans for i in self._queue) < max_spans:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(self._cond.wait(), remaining)
                    except TimeoutError:
                        break
            self._seq += 1
            batch = TakenBatch(batch_id=f"{self._prefix}-{self._seq}")
            total = 0
            while self._queue and (not batch.items or total + self._queue[0].spans <= max_spans):
                item = self._queue.popleft()
                batch.items.append(item)
                total += item.spans
            return batch

    async def release(self, batch: TakenBatch) -> None:
        """Free the capacity a processed batch held."""
        async with self._cond:
            self._reserved -= batch.spans
            self._telemetry.queue_size.labels(self.name).set(self._reserved)
            self._cond.notify_all()

    async def close(self) -> None:
        """Refuse new offers; `take` drains what is queued, then returns None."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
