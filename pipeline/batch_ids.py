"""Batch ids of what span-holding processors (tail sampling, trace context) pass on.

Sinks key idempotent writes on the batch id (ClickHouse: `insert_deduplication_token`),
so an id must name one content: the same content under the same id when a batch is
redelivered (the copy is dropped), and different content never under an id already used
(else the sink drops new spans as a "duplicate" of other ones: a loss).

A processor that passes on spans held from earlier batches (released on a later batch,
a tick or a shutdown flush) names its output with `derived_batch(...)`:
`<prefix>-<sha256 prefix>` of the sorted source batch ids and the sorted (trace id, span
id) of the spans it carries. A redelivery that releases the same spans from the same
sources gets the same id, whatever batch or tick they happen to be released on; any other
content gets another id.

`meta["sources"]` of a derived batch lists the transport batches its spans came from, so
a processor further down the chain that holds them (`held_batches()`) names batches the
runtime knows (Kafka offset ranges, write-ahead log entries), not derived ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pipeline.spans import Span, SpanBatch

SOURCES = "sources"  # meta key: ids of the transport batches a derived batch's spans came from


def source_ids(batch: SpanBatch) -> tuple[str, ...]:
    """The transport batches `batch`'s spans came from: its `meta["sources"]`, else its own id."""
    sources = batch.meta.get(SOURCES)
    return tuple(sources) if sources else (batch.batch_id,)


def derived_batch_id(prefix: str, sources: Iterable[str], spans: Iterable[Span]) -> str:
    """The id of a batch carrying `spans` from the batches `sources`: deterministic in both."""
    h = hashlib.sha256("\n".join(sorted(set(sources))).encode())
    h.update(b"\0")
    h.update("\n".join(sorted(f"{s.trace_id}/{s.span_id}" for s in spans)).encode())
    return f"{prefix}-{h.hexdigest()[:24]}"


def derived_batch(prefix: str, batch: SpanBatch, spans: list[Span], sources: Iterable[str]) -> SpanBatch:
    """`spans` (from `sources`) passed on while processing `batch`, under their derived id."""
    src = sorted(set(sources))
    return SpanBatch(spans=spans, batch_id=derived_batch_id(prefix, src, spans), meta={**batch.meta, SOURCES: src})
