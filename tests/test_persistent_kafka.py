"""The persistent test broker (Tansu on S3, tests/services/kafka.py) reports a partition's end
offset as Kafka does, before and after a restart.

Faust recovers a table from its changelog up to the end offset (ListOffsets latest): an end
offset short of the last acknowledged record loses that record in the worker that recovers.
Records written within one second are the case that S3's second-resolution LastModified got
wrong (the module doc of tests/services/kafka.py).
"""

from __future__ import annotations

import asyncio

from tests.distributed_helpers import create_topic
from tests.services.kafka import PersistentKafka


async def _produce(url: str, topic: str, n: int) -> int:
    from aiokafka import AIOKafkaProducer

    await create_topic(url, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=16, linger_ms=0)
    await producer.start()
    try:
        last = -1
        for i in range(n):  # one record per batch and request, acknowledged before the next
            last = (await (await producer.send(topic, f"record {i}".encode(), partition=0))).offset
        return last
    finally:
        await producer.stop()


async def _end_and_fetched(url: str, topic: str) -> tuple[int, list[int]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=url, enable_auto_commit=False)
    await consumer.start()
    try:
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.assign([tp])
        consumer.seek(tp, 0)
        fetched: list[int] = []
        for _ in range(40):
            for msgs in (await consumer.getmany(tp, timeout_ms=500)).values():
                fetched += [m.offset for m in msgs]
            if fetched and consumer.highwater(tp) is not None and fetched[-1] + 1 >= consumer.highwater(tp):
                break
        return end, fetched
    finally:
        await consumer.stop()


def test_end_offset_covers_records_written_within_one_second_across_a_restart(
        persistent_kafka: PersistentKafka) -> None:
    broker = persistent_kafka
    topic = "end_offset_check"
    last = asyncio.run(_produce(broker.url, topic, 6))
    end, fetched = asyncio.run(_end_and_fetched(broker.url, topic))
    assert fetched == list(range(last + 1))
    assert end == last + 1, f"ListOffsets latest {end}, last acknowledged offset {last}"
    broker.restart(kill=True)
    end, fetched = asyncio.run(_end_and_fetched(broker.url, topic))
    assert fetched == list(range(last + 1))
    assert end == last + 1, f"after a restart: ListOffsets latest {end}, last acknowledged offset {last}"
