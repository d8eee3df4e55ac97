"""Every use of an aiokafka internal by tracepipe, in one place.

When the broker stops answering, the receiver answers UNAVAILABLE and must make sure that what
it refused is never delivered later (a client retry would store it twice). aiokafka has no
public way to drop what a producer holds without sending it: `stop()` flushes. So
`discard_queued(producer, exc)` stops the producer's sender task and fails every batch still in
its accumulator (`AIOKafkaProducer._sender`, `._message_accumulator`, the accumulator's
`_batches` and `_pending_batches`, `MessageBatch.failure`).

aiokafka compresses gzip batches at level 9 and takes no level (the Java client and librdkafka
default to 6, a third less CPU for about 1 % more bytes on OTLP). `set_gzip_level(level)`
rebinds the `gzip_encode` its record batch builders call (the C and the pure-Python ones, which
import it from `aiokafka.codec`) to one passing `level`; it applies to every aiokafka producer
in the process.

`check_compatible()` verifies them against the installed aiokafka; `tests/test_aiokafka_compat.py`
runs it against a started producer, so a release that changes one of them fails loudly instead
of silently delivering refused data. The verified range is pinned in pyproject.toml.
"""

from __future__ import annotations

import functools
from typing import Any

VERIFIED = ">=0.14.0,<0.15"  # aiokafka releases this module was checked against


class AiokafkaCompatError(RuntimeError):
    """The installed aiokafka no longer has an internal the receiver relies on."""


def check_compatible(producer: Any) -> None:
    """Raise AiokafkaCompatError naming every internal a started `producer` lacks."""
    problems: list[str] = []
    sender = getattr(producer, "_sender", None)
    if sender is None or not hasattr(sender, "sender_task"):
        problems.append("AIOKafkaProducer._sender.sender_task is gone")
    acc = getattr(producer, "_message_accumulator", None)
    if acc is None:
        problems.append("AIOKafkaProducer._message_accumulator is gone")
    else:
        if not isinstance(getattr(acc, "_batches", None), dict):
            problems.append("MessageAccumulator._batches is no longer a dict of queues")
        if not hasattr(getattr(acc, "_pending_batches", None), "__iter__"):
            problems.append("MessageAccumulator._pending_batches is gone")
    from aiokafka.producer.message_accumulator import MessageBatch

    if not callable(getattr(MessageBatch, "failure", None)):
        problems.append("MessageBatch.failure is gone")
    for module in _record_builders():
        if not callable(getattr(module, "gzip_encode", None)):
            problems.append(f"{module.__name__}.gzip_encode is gone")
    if problems:
        raise AiokafkaCompatError(
            f"aiokafka changed internals tracepipe's receiver relies on (verified {VERIFIED}): " + "; ".join(problems)
        )


def discard_queued(producer: Any, exc: BaseException) -> None:
    """Stop `producer`'s sender and fail every batch it still holds with `exc`, unsent."""
    acc = producer._message_accumulator
    sender = producer._sender
    if sender is not None and sender.sender_task is not None:
        sender.sender_task.cancel()
    for queue in list(acc._batches.values()):
        for batch in list(queue):
            batch.failure(exception=exc)
        queue.clear()
    for batch in list(acc._pending_batches):
        batch.failure(exception=exc)


def _record_builders() -> list[Any]:
    """The aiokafka modules whose batch builders call `gzip_encode` by their global name."""
    from aiokafka.record import default_records, legacy_records
    from aiokafka.record._crecords import default_records as c_default
    from aiokafka.record._crecords import legacy_records as c_legacy

    return [default_records, legacy_records, c_default, c_legacy]


def set_gzip_level(level: int) -> None:
    """Make every aiokafka producer in this process compress gzip batches at `level` (1-9)."""
    from aiokafka.codec import gzip_encode

    encode = functools.partial(gzip_encode, compresslevel=level)
    for module in _record_builders():
        module.gzip_encode = encode
