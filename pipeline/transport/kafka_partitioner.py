"""Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka place a
keyed message), in about half the CPU of aiokafka's pure-Python murmur2.

The receiver keys each message by its trace id, so it hashes one key per trace; the partition
is the one aiokafka's DefaultPartitioner picks for the same key (tests/test_distributed_units.py
compares them), so receivers of either kind place a trace on the same partition.
"""

from __future__ import annotations

import random
import struct

__all__ = ["KeyPartitioner", "murmur2"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 as org.apache.kafka.common.utils.Utils.murmur2 computes it (seed 0x9747b28c)."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length // 4}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class KeyPartitioner:
    """An aiokafka `partitioner`: murmur2(key) over all partitions; a message without a key
    goes to a random available partition."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]
