"""The aiokafka internals the receiver relies on (pipeline.transport.aiokafka_compat) still work.

An aiokafka release that renames or reshapes one of them fails here, loudly, instead of letting
a receiver deliver data it refused (and a client's retry then store it twice).
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from pipeline.config import KafkaTransportConfig
from pipeline.transport import aiokafka_compat
from pipeline.transport.kafka_common import ensure_topics
from tests.services import RunningService, start_service

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kafka() -> RunningService:
    svc = start_service("kafka")
    yield svc
    svc.stop()


def test_installed_aiokafka_is_in_the_verified_range_pinned_in_pyproject() -> None:
    from packaging.specifiers import SpecifierSet

    pinned = re.search(r'"aiokafka([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None
    assert SpecifierSet(pinned.group(1)) == SpecifierSet(aiokafka_compat.VERIFIED)
    assert version("aiokafka") in SpecifierSet(aiokafka_compat.VERIFIED)


def test_discarded_messages_fail_and_never_reach_the_topic(kafka: RunningService) -> None:
    async def run() -> tuple[BaseException | None, list[bytes]]:
        cfg = KafkaTransportConfig(brokers=kafka.url, enable_idempotence=False, compression="none")
        await ensure_topics(cfg, {"compat_discard": 1})
        # The message that is delivered goes through a producer of its own: behind a 60 s linger it
        # would wait out the linger (this test took 60 s that way).
        sender = AIOKafkaProducer(bootstrap_servers=kafka.url, linger_ms=0, enable_idempotence=False)
        await sender.start()
        try:
            await (await sender.send("compat_discard", b"delivered"))
        finally:
            await sender.stop()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.url, linger_ms=60_000, enable_idempotence=False)
        await producer.start()
        aiokafka_compat.check_compatible(producer)
        queued = await producer.send("compat_discard", b"refused")  # waits in the accumulator (linger)
        aiokafka_compat.discard_queued(producer, KafkaConnectionError("discarded by the test"))
        try:
            await asyncio.wait_for(queued, 5)
            err = None
        except KafkaConnectionError as e:
            err = e
        await asyncio.wait_for(producer.stop(), 10)
        consumer = AIOKafkaConsumer("compat_discard", bootstrap_servers=kafka.url, auto_offset_reset="earliest",
                                    group_id=None)
        await consumer.start()
        try:
            got = await consumer.getmany(timeout_ms=3000)
        finally:
            await consumer.stop()
        return err, [m.value for batch in got.values() for m in batch]

    err, values = asyncio.run(run())
    assert err is not None and "discarded by the test" in str(err)
    assert values == [b"delivered"]


def test_a_missing_internal_is_reported_by_name() -> None:
    class Producer:  # what a release without the sender and accumulator would look like
        pass

    with pytest.raises(aiokafka_compat.AiokafkaCompatError, match=r"_sender.*_message_accumulator"):
        aiokafka_compat.check_compatible(Producer())


def test_gzip_level_reaches_the_batches_aiokafka_builds() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    from bench.workload import make_request

    value = make_request(30, seed=1, prompt_bytes=300).SerializeToString()

    def batch(level: int) -> bytes:
        aiokafka_compat.set_gzip_level(level)
        b = DefaultRecordBatchBuilder(magic=2, compression_type=DefaultRecordBatch.CODEC_GZIP, is_transactional=0,
                                      producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
        b.append(0, timestamp=None, key=b"k", value=value, headers=[])
        return bytes(b.build())

    try:
        fast, small = batch(1), batch(9)
    finally:
        aiokafka_compat.set_gzip_level(9)  # aiokafka's own level, for the tests that follow
    assert len(fast) > len(small)
    for raw in (fast, small):
        [record] = list(DefaultRecordBatch(raw))
        assert record.value == value
