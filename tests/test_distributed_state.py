"""The state interface backed by Faust tables: batch updates made while a worker runs a
partition's batch survive the worker (changelog topic) and come back in a new one.

Runs a Faust app in-process against a real broker (Tansu), the way WorkerRuntime does:
take_events batches, Faust's current event set to the batch's last event while the
"processor" updates its table once per batch.
"""

from __future__ import annotations

import asyncio

import pytest

from pipeline.worker.state import FaustStateStore, current_partition
from tests.distributed_helpers import TANSU_KAFKA_SETTINGS, create_topic, leave_group
from tests.services import RunningService, start_service


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


async def _produce(url: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    await create_topic(url, topic, 2)
    producer = AIOKafkaProducer(bootstrap_servers=url, max_batch_size=16, linger_ms=0)
    await producer.start()
    try:
        for key, value in items:
            await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


async def _run_app(url: str, topic: str, expect: int) -> dict[str, int]:
    """Consume until `expect` messages were counted in total (recovered state included)."""
    import faust

    app = faust.App("state-test", broker=f"kafka://{url}", web_enabled=False, store="memory://",
                    topic_partitions=2, consumer_auto_offset_reset="earliest",
                    **TANSU_KAFKA_SETTINGS["worker_options"])
    store = FaustStateStore(app, 2)
    counts = store.table("counts")  # created before the app starts, as build_chain does
    src = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    done = asyncio.Event()
    seen: set[tuple[int, int]] = set()

    @app.agent(src)
    async def count(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(100, within=0.2):
            # Nothing is counted while Faust still recovers the table, whose replay would overwrite the
            # count (the worker lets such a take go: WorkerRuntime.handle_events); Faust then seeks to the
            # committed offsets and delivers these again, so an offset is counted once.
            while app.rebalancing:
                await asyncio.sleep(0.05)
            events = [ev for ev in events if (ev.message.partition, ev.message.offset) not in seen]
            seen.update((ev.message.partition, ev.message.offset) for ev in events)
            if not events:
                continue
            # One batch per partition, as the worker runs them, so a key's writes go to its own changelog
            # partition (a take spans both partitions).
            by_partition: dict[int, list] = {}
            for ev in events:
                by_partition.setdefault(ev.message.partition, []).append(ev)
            for evs in by_partition.values():
                by_key: dict[str, int] = {}
                for ev in evs:
                    k = ev.value.decode()
                    by_key[k] = by_key.get(k, 0) + 1
                with current_partition(evs[-1]):
                    for k, n in by_key.items():  # one write per key per batch
                        counts[k] = int(counts.get(k, 0)) + n
            await app.producer.flush()
            if sum(int(v) for v in counts.values()) >= expect:
                done.set()

    await app.start()
    store.mark_started()
    try:
        await asyncio.wait_for(done.wait(), 60)
    except TimeoutError:
        raise AssertionError(f"counted {dict(counts.items())} of {expect} messages in 60 s; "
                             f"assigned {sorted(app.consumer.assignment())}") from None
    finally:
        await app.stop()
    # Tansu keeps a stopped app's generation-0 member in the group (see leave_group): take it out, so
    # the next app joins an empty group as a replacement worker does on Kafka.
    await leave_group(url, app.conf.id)
    return {k: int(v) for k, v in counts.items()}


def test_faust_table_state_survives_a_restart(kafka: RunningService) -> None:
    topic = "state_events"
    # every key's messages on one partition (keyed), as spans of a trace are
    first = [(f"k{i % 4}".encode(), f"svc-{i % 4}".encode()) for i in range(40)]
    asyncio.run(_produce(kafka.url, topic, first))
    assert asyncio.run(_run_app(kafka.url, topic, 40)) == {f"svc-{i}": 10 for i in range(4)}
    # a new worker: recovers the counts from the changelog, then adds the new messages
    asyncio.run(_produce(kafka.url, topic, [(b"k0", b"svc-0")] * 5))
    assert asyncio.run(_run_app(kafka.url, topic, 45)) == {"svc-0": 15, "svc-1": 10, "svc-2": 10, "svc-3": 10}
