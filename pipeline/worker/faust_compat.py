"""Every use of a Faust (faust-streaming) internal by the worker, in one place.

The worker owns its span offsets (`pipeline.worker.runtime`): it commits each batch once
every sink acknowledged it, and keeps those messages out of Faust's own ack bookkeeping,
whose `Consumer._new_offset` commits past a message that was never acked when it is the
first of its partition or sits right after the committed offset (an off-by-one; shown
against the broker with only Faust's public `noack_take` + `Stream.ack` by
`tests/test_faust_ack_bookkeeping.py`, which fails once a Faust release fixes it). A batch
whose spans tail sampling holds leaves exactly such a message un-acked. Faust has no public
API to commit exact offsets, so the few internals it takes live here, each behind a function
named for what it does:

- `release_uncommitted(events)`: mark messages done (`Message.acked`) so that a rebalance's
  `wait_empty` stops waiting for them, without entering Faust's commit bookkeeping;
- `commit_offsets(consumer, offsets)`: commit exact offsets (`Consumer._commit_offsets`);
- `committed_offset(consumer, tp)`: the group's committed offset, or the earliest offset
  when none is committed, asked of the aiokafka consumer in Faust's consumer thread
  (`consumer._thread._ensure_consumer()`, `call_thread`);
- `flow_events(consumer)`: the events Faust sets when it suspends and resumes the flow
  for a rebalance (`Consumer.suspend_flow`, `Consumer.can_resume_flow`);
- `current_event(event)`: make an event Faust's current event so that table writes made
  while a batch runs go to its partition (`faust.streams._current_event`);
- `set_acknowledged(table, key, value, partition)`: `table[key] = value`, returning the
  changelog record's future, done once Kafka acknowledged it (`Collection.send_changelog`,
  `Collection.data`: what `Table.__setitem__` does, minus dropping that future).

`check_compatible()` verifies them against the installed Faust; the worker calls it at
start and `tests/test_faust_compat.py` runs it, so a Faust release that changes one of
them fails loudly instead of silently breaking delivery. The verified range is pinned in
pyproject.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

VERIFIED = ">=0.15.3,<0.16"  # faust-streaming releases this module was checked against


class FaustCompatError(RuntimeError):
    """The installed Faust no longer has an internal the worker relies on."""


def check_compatible() -> None:
    """Raise FaustCompatError naming every internal that is missing or changed shape."""
    import faust.streams
    from faust.transport.consumer import Consumer
    from faust.transport.drivers import aiokafka as faust_aiokafka
    from faust.types import Message

    problems: list[str] = []
    if not isinstance(getattr(faust.streams, "_current_event", None), __import__("contextvars").ContextVar):
        problems.append("faust.streams._current_event is no longer a ContextVar")
    if "acked" not in getattr(Message, "__slots__", ()) and not hasattr(Message, "acked"):
        problems.append("faust.types.Message has no `acked` attribute")
    commit = getattr(Consumer, "_commit_offsets", None)
    if commit is None or not inspect.iscoroutinefunction(commit):
        problems.append("Consumer._commit_offsets is gone or no longer a coroutine")
    elif list(inspect.signature(commit).parameters)[:2] != ["self", "offsets"]:
        problems.append(f"Consumer._commit_offsets signature changed: {inspect.signature(commit)}")
    for attr in ("suspend_flow", "can_resume_flow"):
        if attr not in getattr(Consumer, "__annotations__", {}):
            problems.append(f"Consumer.{attr} is no longer declared")
    from faust.tables.base import Collection

    send = getattr(Collection, "send_changelog", None)
    if send is None or list(inspect.signature(send).parameters)[:4] != ["self", "partition", "key", "value"]:
        problems.append("Collection.send_changelog(partition, key, value) is gone or changed shape")
    if not isinstance(getattr(Collection, "data", None), property):
        problems.append("Collection.data is no longer a property")
    thread = getattr(faust_aiokafka, "AIOKafkaConsumerThread", None)
    if thread is None or not callable(getattr(thread, "_ensure_consumer", None)) or not callable(
        getattr(thread, "call_thread", None)
    ):
        problems.append("AIOKafkaConsumerThread._ensure_consumer / call_thread are gone")
    if problems:
        raise FaustCompatError(
            f"faust-streaming changed internals tracepipe's worker relies on (verified {VERIFIED}): "
            + "; ".join(problems)
        )


def release_uncommitted(events: Iterable[Any]) -> None:
    """Mark messages done for Faust without acking them into its commit bookkeeping."""
    for ev in events:
        ev.message.acked = True


async def commit_offsets(consumer: Any, offsets: Mapping[Any, int]) -> bool:
    """Commit exactly `offsets` ({tp: next offset to read}); False when the commit failed."""
    return bool(await consumer._commit_offsets(dict(offsets)))


async def committed_offset(consumer: Any, tp: Any, timeout: float = 10.0) -> int | None:
    """The group's committed offset of `tp`, else its earliest offset, else None."""
    thread = consumer._thread
    client = thread._ensure_consumer()
    committed = await asyncio.wait_for(thread.call_thread(client.committed, tp), timeout)
    if committed is None:
        begin = await asyncio.wait_for(thread.call_thread(client.beginning_offsets, [tp]), timeout)
        committed = begin.get(tp)
    return None if committed is None else int(committed)


def flow_events(consumer: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """(suspended, resumed): set when Faust stops the flow for a rebalance, and when it resumes."""
    return consumer.suspend_flow, consumer.can_resume_flow


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make `event` Faust's current event, so table writes go to its partition."""
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def set_acknowledged(table: Any, key: Any, value: Any, partition: int) -> asyncio.Future[Any]:
    """`table[key] = value` on `partition`, returning the future of its changelog record (done
    once Kafka acknowledged it; an exception if the send failed).

    Faust's `table[key] = value` drops that future, and `app.producer.flush()` is no stand-in:
    its buffer flush gives up after 0.1 s without a message sent (`flush_atmost`), so under
    produce latency it returns before the record reached the producer, let alone Kafka."""
    fut = table.send_changelog(partition, key, value)
    table.data[key] = value
    return fut
