"""The receiver's Kafka transport: OTLP export requests -> one Kafka message per partition.

`offer(request, spans, timeout, raw)` splits the request by trace id into one
ExportTraceServiceRequest per trace (resource and scope wrappers kept; when the request is
unchanged, a one-trace request goes as the `raw` bytes received and a one-trace ResourceSpans
as its slice of them). Each trace's partition is the one its key (the trace id in lowercase
hex) hashes to, as Kafka's default partitioner places a keyed message, so every span of a
trace lands on one partition (tail sampling and per-trace rollups need that), and the traces
of a request bound for one partition travel as ONE message (the serialised requests
concatenated, which protobuf reads as one request), up to `max_message_bytes`. A worker pays
its per-message costs (consumer, Faust event, decode) once per partition of a request instead
of once per trace: a 170-trace request over 4 partitions is 4 messages, not 170. A message
holding one trace is keyed by that trace id, as the OTel Collector kafka exporter's
`otlp_proto` encoding with `partition_traces_by_id` writes it; a packed message is keyed by
its first trace id. It answers ACCEPTED only once Kafka
acknowledged every message (acks=all by default); otherwise:

- FULL: more than `max_in_flight_spans` await acks and no room freed within `timeout`
  (the receiver answers RESOURCE_EXHAUSTED / 429, the client retries);
- UNAVAILABLE: the broker is down or did not ack within `produce_timeout`
  (UNAVAILABLE / 503). The producer is then discarded with everything still queued in it
  (aiokafka would otherwise deliver those messages when the broker returns, and the
  client's retry would store them twice); while the broker is known down, offers fail
  fast, and a fresh producer is started once the broker answers again;
- TOO_LARGE: the request alone exceeds `max_in_flight_spans`;
- CLOSED: the receiver is shutting down.

A produce whose request was already on the wire when it timed out may still have reached
Kafka: the client's retry then duplicates it. That is the at-least-once contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.config import KafkaTransportConfig
from pipeline.otlp.wire import F1, F2, F3, field, resource_spans_fields
from pipeline.telemetry import Telemetry
from pipeline.transport.aiokafka_compat import check_compatible, discard_queued, set_gzip_level
from pipeline.transport.kafka_common import client_kwargs
from pipeline.transport.kafka_partitioner import KeyPartitioner, partitions_of
from pipeline.transport.memory import Offer

log = logging.getLogger("tracepipe.transport.kafka")

__all__ = ["KafkaRequestTransport", "pack_by_partition", "split_by_trace"]


def split_by_trace(request: ExportTraceServiceRequest,
                   raw: bytes | None = None) -> list[tuple[bytes, bytes | memoryview]]:
    """(key, value) per trace: key = trace id hex, value = the trace's spans as an
    ExportTraceServiceRequest keeping their resource and scope wrappers (and schema urls).

    `raw`: the bytes `request` was parsed from, when nothing in it was changed. A request
    holding one trace is then forwarded as those bytes, and a ResourceSpans holding one trace
    as its slice of them (`resource_spans_fields`, a memoryview: not even copied until the
    messages are packed): nothing is serialised again. Otherwise the value is assembled from
    serialised parts at the coarsest level holding one trace: a whole ResourceSpans, else a
    whole ScopeSpans, else single spans under their resource and scope. Repeated fields
    concatenate on the wire, so the parts are joined with their field headers instead of
    building a message per trace."""
    fields = resource_spans_fields(raw) if raw is not None else None
    if fields is not None and len(fields) != len(request.resource_spans):
        fields = None  # not the bytes of this request
    out: dict[bytes, list[bytes | memoryview]] = {}  # trace id -> its ResourceSpans fields (header included)
    for i, rs in enumerate(request.resource_spans):
        scope_traces = [{sp.trace_id for sp in ss.spans} for ss in rs.scope_spans]
        in_rs = set().union(*scope_traces)
        if len(in_rs) == 1:
            tid = in_rs.pop()
            out.setdefault(tid, []).append(fields[i] if fields is not None else field(F1, rs.SerializeToString()))
            continue
        for tid, body in _split_resource_spans(rs, scope_traces).items():
            out.setdefault(tid, []).append(field(F1, body))
    if len(out) == 1 and raw is not None:
        return [(next(iter(out)).hex().encode(), raw)]
    return [(tid.hex().encode(), parts[0] if len(parts) == 1 else b"".join(parts)) for tid, parts in out.items()]


def _split_resource_spans(rs: Any, scope_traces: list[set[bytes]]) -> dict[bytes, bytes]:
    """A ResourceSpans holding several traces -> trace id -> that trace's serialised ResourceSpans."""
    head = field(F1, rs.resource.SerializeToString()) if rs.HasField("resource") else b""
    tail = field(F3, rs.schema_url.encode()) if rs.schema_url else b""
    parts: dict[bytes, list[bytes]] = {}  # trace id -> its serialised ScopeSpans in this resource
    for ss, traces in zip(rs.scope_spans, scope_traces, strict=True):
        if len(traces) == 1:
            parts.setdefault(next(iter(traces)), []).append(field(F2, ss.SerializeToString()))
            continue
        by_trace: dict[bytes, list[bytes]] = {}
        for sp in ss.spans:
            by_trace.setdefault(sp.trace_id, []).append(field(F2, sp.SerializeToString()))
        s_head = field(F1, ss.scope.SerializeToString()) if ss.HasField("scope") else b""
        s_tail = field(F3, ss.schema_url.encode()) if ss.schema_url else b""
        for tid, spans in by_trace.items():
            parts.setdefault(tid, []).append(field(F2, b"".join([s_head, *spans, s_tail])))
    return {tid: b"".join([head, *scope_parts, tail]) for tid, scope_parts in parts.items()}


Message = tuple[bytes | None, bytes, int | None]  # key, value, partition (None: the partitioner's choice)


def pack_by_partition(messages: Sequence[tuple[bytes, bytes | memoryview]], partitions: int,
                      max_bytes: int) -> list[Message]:
    """Per-trace (key, value) messages -> one message per partition (values concatenated: one
    ExportTraceServiceRequest on the wire), each at most `max_bytes` unless one trace alone is
    larger. A partition's traces keep their order; the message is keyed by its first trace."""
    if partitions <= 0 or len(messages) <= 1:
        return [(k, bytes(v) if isinstance(v, memoryview) else v, None) for k, v in messages]
    open_: dict[int, tuple[bytes, list[bytes | memoryview], int]] = {}  # partition -> (key, values, size)
    out: list[Message] = []
    for (key, value), part in zip(messages, partitions_of([k for k, _ in messages], partitions), strict=True):
        cur = open_.get(part)
        if cur is not None and cur[2] + len(value) > max_bytes:
            out.append((cur[0], b"".join(cur[1]), part))
            cur = None
        if cur is None:
            open_[part] = (key, [value], len(value))
        else:
            cur[1].append(value)
            open_[part] = (cur[0], cur[1], cur[2] + len(value))
    out.extend((key, b"".join(values), part) for part, (key, values, _) in open_.items())
    return out


class KafkaRequestTransport:
    """RequestTransport over an aiokafka producer (see module doc)."""

    name = "kafka"
    accepts_raw = True  # offer(raw=...): a one-trace request goes to Kafka as the bytes received

    def __init__(self, cfg: KafkaTransportConfig, telemetry: Telemetry, probe_interval: float = 1.0) -> None:
        self.cfg = cfg
        self.topic = cfg.topic
        self.telemetry = telemetry
        self.capacity = cfg.max_in_flight_spans
        self.probe_interval = probe_interval
        self._producer: Any = None
        self._in_flight = 0
        self._cond = asyncio.Condition()
        self._closed = False
        self._broker_down: str | None = "not started"
        self._probe: asyncio.Task[None] | None = None
        telemetry.kafka_in_flight_spans.labels(self.topic).set(0)
        telemetry.queue_capacity.labels(self.name).set(self.capacity)

    # --- lifecycle -------------------------------------------------------------------

    def producer_kwargs(self) -> dict[str, Any]:
        c = self.cfg
        kwargs: dict[str, Any] = {
            **client_kwargs(c, "receiver"),
            "acks": "all" if c.acks == "all" else int(c.acks),
            "partitioner": KeyPartitioner(),
            "enable_idempotence": c.enable_idempotence,
            "compression_type": None if c.compression == "none" else c.compression,
            "linger_ms": c.linger_ms,
            "max_batch_size": c.max_batch_bytes,
            "max_request_size": c.max_request_bytes,
            "request_timeout_ms": int(c.produce_timeout * 1000),
        }
        kwargs.update(c.extra)
        kwargs.update(c.producer_options)
        return kwargs

    async def start(self) -> None:
        self._producer = await self._new_producer()
        self._broker_down = None
        self._probe = asyncio.create_task(self._watch_broker(), name="tracepipe-kafka-probe")

    async def _new_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.producer_kwargs())
        try:
            await asyncio.wait_for(producer.start(), self.cfg.produce_timeout * 3)
            check_compatible(producer)  # fail at start, not when the broker goes down
            set_gzip_level(self.cfg.gzip_level)  # aiokafka_compat: aiokafka itself takes no level
        except BaseException:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), 5)
            raise
        return producer

    async def close(self) -> None:
        """Refuse new offers, wait for in-flight acks (bounded), stop the producer."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), self.cfg.produce_timeout + 5)
            except Exception:
                await self._discard_producer("shutdown")

    def ready(self) -> bool:
        return not self._closed and self._producer is not None and self._broker_down is None

    def status(self) -> tuple[bool, str]:
        if self._closed:
            return False, "closed"
        if self._broker_down is not None:
            return False, f"kafka unavailable: {self._broker_down}"
        return True, f"kafka {self.cfg.brokers} topic {self.topic}, {self._in_flight} spans awaiting acks"

    # --- offer -----------------------------------------------------------------------

    async def offer(
        self, request: ExportTraceServiceRequest, spans: int, timeout: float = 0.0, raw: bytes | None = None
    ) -> Offer:
        if self._closed:
            return Offer.CLOSED
        t = self.telemetry
        if spans > self.capacity:
            t.kafka_produce_failures.labels(self.topic, "too_large").inc()
            return Offer.TOO_LARGE
        if self._broker_down is not None or self._producer is None:
            t.kafka_produce_failures.labels(self.topic, "unavailable").inc()
            return Offer.UNAVAILABLE
        if not await self._reserve(spans, timeout):
            if self._closed:
                return Offer.CLOSED
            t.kafka_produce_failures.labels(self.topic, "full").inc()
            return Offer.FULL
        try:
            if not spans:
                return Offer.ACCEPTED
            per_trace = split_by_trace(request, raw)
            partitions = await self._partitions()
            return await self._produce(pack_by_partition(per_trace, partitions, self.cfg.max_message_bytes))
        finally:
            await self._unreserve(spans)

    async def _reserve(self, spans: int, timeout: float) -> bool:
        async with self._cond:
            if self._in_flight + spans > self.capacity:
                if timeout <= 0:
                    return False
                try:
                    await asyncio.wait_for(
                        self._cond.wait_for(lambda: self._closed or self._in_flight + spans <= self.capacity),
                        timeout,
                    )
                except TimeoutError:
                    return False
                if self._closed:
                    return False
            self._in_flight += spans
            self.telemetry.kafka_in_flight_spans.labels(self.topic).set(self._in_flight)
            return True

    async def _unreserve(self, spans: int) -> None:
        async with self._cond:
            self._in_flight -= spans
            self.telemetry.kafka_in_flight_spans.labels(self.topic).set(self._in_flight)
            self._cond.notify_all()

    async def _partitions(self) -> int:
        """The span topic's partition count, from the producer's metadata (aiokafka's public
        `partitions_for`, which asks the broker only when the topic is not known yet); 0 when it
        cannot say: then every trace goes as its own keyed message and the partitioner places it."""
        producer = self._producer
        if producer is None:
            return 0
        try:
            known = await asyncio.wait_for(producer.partitions_for(self.topic), self.cfg.produce_timeout)
        except Exception:
            return 0
        return len(known) if known else 0

    async def _produce(self, messages: Sequence[Message]) -> Offer:
        from aiokafka.errors import KafkaError

        if not messages:
            return Offer.ACCEPTED
        producer = self._producer
        if producer is None:
            return Offer.UNAVAILABLE
        t0 = time.perf_counter()
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.cfg.produce_timeout):
                for key, value, partition in messages:
                    futures.append(await producer.send(self.topic, value, key=key, partition=partition))
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as e:
            for f in futures:
                if not f.done():
                    f.add_done_callback(_consume_exception)
            reason = "timeout" if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ else "unavailable"
            self.telemetry.kafka_produce_failures.labels(self.topic, reason).inc()
            if producer is self._producer:
                await self._discard_producer(f"{type(e).__name__}: {e}".strip(": "))
            return Offer.UNAVAILABLE
        self.telemetry.kafka_produce_duration.labels(self.topic).observe(time.perf_counter() - t0)
        self.telemetry.kafka_produced_messages.labels(self.topic).inc(len(messages))
        return Offer.ACCEPTED

    # --- broker health ---------------------------------------------------------------

    async def _discard_producer(self, why: str) -> None:
        """Drop the producer and everything queued in it, so nothing refused is delivered later."""
        from aiokafka.errors import KafkaConnectionError

        if self._broker_down is None:
            log.warning("Kafka unavailable (%s); refusing data with retryable codes until it is back", why)
        self._broker_down = why or "unavailable"
        producer, self._producer = self._producer, None
        if producer is None:
            return
        discard_queued(producer, KafkaConnectionError(f"producer discarded: {why}"))  # aiokafka_compat
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(producer.stop(), 5)

    async def _watch_broker(self) -> None:
        """While the broker is marked down, try a fresh producer; mark it up when one starts."""
        while not self._closed:
            await asyncio.sleep(self.probe_interval)
            if self._broker_down is None and self._producer is not None:
                continue
            try:
                producer = await self._new_producer()
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            if self._closed:
                await producer.stop()
                return
            self._producer = producer
            self._broker_down = None
            log.info("Kafka reachable again; accepting data")


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
