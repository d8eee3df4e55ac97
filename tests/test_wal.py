"""The embedded queue's write-ahead log, on real files: framing, recovery, segments, bounds, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport, Offer
from pipeline.transport.wal import HEADER, SUFFIX, FsyncPolicy, WalFull, WriteAheadLog, parse_batch_id


def make_wal(d: Path, **kw: object) -> WriteAheadLog:
    opts: dict = {"max_bytes": 1 << 24, "segment_bytes": 1 << 20, "fsync": "batch", "telemetry": Telemetry()}
    opts.update(kw)
    return WriteAheadLog(d, **opts)


def request(n_spans: int, tag: int) -> ExportTraceServiceRequest:
    spans = [Span(trace_id=tag.to_bytes(16, "big"), span_id=(tag * 1000 + i + 1).to_bytes(8, "big"), name=f"s{tag}")
             for i in range(n_spans)]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.endswith(SUFFIX))


def payloads(wal: WriteAheadLog) -> list[bytes]:
    return [p for rb in wal.open() for _, p in rb.records]


async def write_records(d: Path, n: int, **kw: object) -> list[bytes]:
    wal = make_wal(d, **kw)
    assert wal.open() == []
    data = [f"record-{i}".encode() * (i + 1) for i in range(n)]
    for p in data:
        wal.append(p)
    await wal.durable()
    await wal.close()
    return data


async def test_records_come_back_in_log_order_after_reopen(tmp_path: Path) -> None:
    data = await write_records(tmp_path, 20)
    assert payloads(make_wal(tmp_path)) == data


async def test_a_torn_tail_record_is_counted_and_the_rest_replayed(tmp_path: Path) -> None:
    data = await write_records(tmp_path, 5)
    seg = [s for s in segments(tmp_path) if s.stat().st_size][-1]
    seg.write_bytes(seg.read_bytes()[:-3])  # the last record lost its last bytes (crash mid-write)
    wal = make_wal(tmp_path)
    assert payloads(wal) == data[:-1]
    assert wal.stats.corrupt == 1


async def test_a_torn_header_is_counted_and_the_rest_replayed(tmp_path: Path) -> None:
    data = await write_records(tmp_path, 3)
    seg = [s for s in segments(tmp_path) if s.stat().st_size][-1]
    seg.write_bytes(seg.read_bytes() + b"\x07\x00\x00")  # a header cut short
    wal = make_wal(tmp_path)
    assert payloads(wal) == data
    assert wal.stats.corrupt == 1


async def test_a_record_with_a_bad_crc_is_skipped_and_counted(tmp_path: Path) -> None:
    data = await write_records(tmp_path, 3)
    seg = [s for s in segments(tmp_path) if s.stat().st_size][-1]
    raw = bytearray(seg.read_bytes())
    second = HEADER.size + len(data[0])  # offset of the second record
    raw[second + HEADER.size + 2] ^= 0xFF  # flip a payload byte of record 1
    seg.write_bytes(bytes(raw))
    tel = Telemetry()
    wal = make_wal(tmp_path, telemetry=tel)
    assert payloads(wal) == [data[0], data[2]]
    assert wal.stats.corrupt == 1
    assert tel.registry.get_sample_value("tracepipe_wal_corrupt_records_total") == 1


async def test_segments_rotate_and_are_deleted_oldest_first_once_done(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, segment_bytes=200)
    wal.open()
    seqs = [wal.append(b"x" * 100) for _ in range(6)]
    assert len(segments(tmp_path)) >= 3
    # The newest batch done first: nothing can go, older segments still hold live records.
    wal.mark_done(seqs[4], seqs[5])
    before = len(segments(tmp_path))
    assert len(segments(tmp_path)) == before
    wal.mark_done(seqs[0], seqs[3])
    left = segments(tmp_path)
    assert len(left) == 1 and left[0] == wal._segments[-1].path  # only the active segment stays
    assert wal.stats.segments_deleted >= 2
    await wal.close()
    assert make_wal(tmp_path).open() == []


async def test_a_done_batch_is_not_replayed_but_its_neighbours_are(tmp_path: Path) -> None:
    wal = make_wal(tmp_path)
    wal.open()
    seqs = [wal.append(f"r{i}".encode()) for i in range(4)]
    wal.mark_taken(seqs[0], seqs[1])
    wal.mark_done(seqs[0], seqs[1])
    await wal.close()
    assert payloads(make_wal(tmp_path)) == [b"r2", b"r3"]


async def test_a_full_log_refuses_appends_and_frees_room_when_segments_go(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, max_bytes=1000, segment_bytes=300)
    wal.open()
    seqs = []
    with pytest.raises(WalFull):
        for _ in range(100):
            seqs.append(wal.append(b"y" * 150))
    assert wal.total_bytes <= 1000
    wal.mark_done(seqs[0], seqs[-1])
    assert wal.has_room(150)
    wal.append(b"y" * 150)
    await wal.close()


async def test_a_full_log_makes_the_queue_answer_full(tmp_path: Path) -> None:
    tel = Telemetry()
    req = request(1, 1)
    size = len(req.SerializeToString()) + HEADER.size
    wal = make_wal(tmp_path, max_bytes=size * 3, segment_bytes=size, telemetry=tel)
    q = MemoryTransport(1000, tel, wal=wal)
    q.load_replay()
    results = [await q.offer(request(1, i), 1, timeout=0) for i in range(1, 6)]
    assert Offer.FULL in results
    assert results[0] is Offer.ACCEPTED
    await q.close_log()


@pytest.mark.parametrize("policy", ["always", "batch", "off"])
async def test_each_fsync_policy_keeps_what_it_acknowledged(tmp_path: Path, policy: str) -> None:
    tel = Telemetry()
    q = MemoryTransport(1000, tel, wal=make_wal(tmp_path, fsync=policy, telemetry=tel))
    q.load_replay()
    answers = await asyncio.gather(*(q.offer(request(2, i), 2, timeout=1) for i in range(1, 11)))
    assert set(answers) == {Offer.ACCEPTED}
    fsyncs = tel.registry.get_sample_value("tracepipe_wal_fsync_duration_seconds_count") or 0
    if FsyncPolicy(policy) is FsyncPolicy.OFF:
        assert fsyncs == 0
    else:
        assert fsyncs >= 1
    if FsyncPolicy(policy) is FsyncPolicy.BATCH:
        assert fsyncs < 10  # concurrent offers shared group commits
    # no close: as after kill -9, whatever was acknowledged is in the files
    q2 = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path, fsync=policy))
    assert q2.load_replay() == 20


async def test_a_replayed_batch_keeps_its_batch_id(tmp_path: Path) -> None:
    q = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path))
    q.load_replay()
    for i in range(1, 6):
        assert await q.offer(request(3, i), 3) is Offer.ACCEPTED
    first = await q.take(9, 0)
    assert first is not None and len(first.items) == 3
    await q.persist_taken()
    rest = await q.take(100, 0)
    assert rest is not None and len(rest.items) == 2
    # crash: neither batch released, nothing closed
    q2 = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path))
    assert q2.load_replay() == 15
    again = await q2.take(100, 0)
    assert again is not None and again.batch_id == first.batch_id
    assert [i.request for i in again.items] == [i.request for i in first.items]
    rng = parse_batch_id(again.batch_id)
    assert rng is not None and rng[1] - rng[0] == 2
    again2 = await q2.take(100, 0)
    assert again2 is not None and again2.batch_id == rest.batch_id


async def test_a_released_batch_held_by_a_processor_stays_in_the_log_until_let_go(tmp_path: Path) -> None:
    q = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path))
    q.load_replay()
    await q.offer(request(1, 1), 1)
    await q.offer(request(1, 2), 1)
    a = await q.take(1, 0)
    b = await q.take(1, 0)
    assert a is not None and b is not None
    await q.release(a, held={a.batch_id})
    await q.release(b, held={a.batch_id})
    q2 = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path))
    assert q2.load_replay() == 1  # a is still held: replayed; b is done
    q.collect(held=set())
    q3 = MemoryTransport(1000, Telemetry(), wal=make_wal(tmp_path))
    assert q3.load_replay() == 0
    assert q.size == 0


async def test_a_recreated_log_gets_a_new_identity(tmp_path: Path) -> None:
    wal = make_wal(tmp_path / "a")
    wal.open()
    same = make_wal(tmp_path / "a")
    same.open()
    other = make_wal(tmp_path / "b")
    other.open()
    assert wal.log_id == same.log_id != other.log_id


async def test_cancelled_offers_waiting_for_room_leak_no_capacity(tmp_path: Path) -> None:
    q = MemoryTransport(10, Telemetry(), wal=make_wal(tmp_path))
    q.load_replay()
    assert await q.offer(request(10, 1), 10) is Offer.ACCEPTED
    waiting = [asyncio.create_task(q.offer(request(5, i), 5, timeout=30)) for i in range(2, 12)]
    await asyncio.sleep(0)
    for t in waiting:
        t.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert q.size == 10
    taken = await q.take(100, 0)
    assert taken is not None
    await q.release(taken)
    assert q.size == 0
    assert await q.offer(request(10, 20), 10) is Offer.ACCEPTED


async def test_a_full_queue_answers_full_once_its_timeout_passed(tmp_path: Path) -> None:
    q = MemoryTransport(10, Telemetry())
    assert await q.offer(request(10, 1), 10) is Offer.ACCEPTED
    assert await q.offer(request(1, 2), 1, timeout=0.05) is Offer.FULL
    assert q.size == 10


async def test_a_waiting_offer_gets_in_when_a_batch_is_released() -> None:
    q = MemoryTransport(10, Telemetry())
    assert await q.offer(request(10, 1), 10) is Offer.ACCEPTED
    waiter = asyncio.create_task(q.offer(request(4, 2), 4, timeout=30))
    taken = await q.take(100, 0)
    assert taken is not None
    await q.release(taken)
    assert await waiter is Offer.ACCEPTED
    assert q.size == 4


async def test_take_returns_an_empty_batch_when_idle_and_none_when_closed() -> None:
    q = MemoryTransport(10, Telemetry())
    idle = await q.take(10, 0, idle_timeout=0.01)
    assert idle is not None and idle.items == []
    await q.close()
    assert await q.take(10, 0, idle_timeout=0.01) is None


async def test_the_receivers_bytes_are_logged_as_they_are_when_given(tmp_path: Path) -> None:
    req = request(2, 5)
    raw = req.SerializeToString()
    q = MemoryTransport(100, Telemetry(), wal=make_wal(tmp_path))
    q.load_replay()
    assert await q.offer(req, 2, raw=raw) is Offer.ACCEPTED
    assert payloads(make_wal(tmp_path)) == [raw]


async def test_a_segment_with_a_skipped_corrupt_record_is_kept_until_its_live_records_are_done(tmp_path: Path) -> None:
    data = await write_records(tmp_path, 10)
    seg = [s for s in segments(tmp_path) if s.stat().st_size][-1]
    raw = bytearray(seg.read_bytes())
    offset = sum(HEADER.size + len(p) for p in data[:5])
    raw[offset + HEADER.size] ^= 0xFF  # record 5 fails its CRC
    seg.write_bytes(bytes(raw))
    wal = make_wal(tmp_path)
    assert payloads(wal) == data[:5] + data[6:]
    wal.mark_done(0, 8)  # a replayed batch spanning the hole: records 0-4 and 6-8
    await wal.close()
    assert seg.exists()
    assert payloads(make_wal(tmp_path)) == [data[9]]
