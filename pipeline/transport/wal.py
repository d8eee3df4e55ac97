"""The embedded queue's write-ahead log: what a receiver acknowledged survives kill -9.

Layout, under `<data_dir>/wal/`: a `wal.id` file (a random log identity, part of every batch
id, so a recreated log never reuses ClickHouse dedup tokens) and numbered segment files
`<first seq, 20 digits>.seg`, appended in order like Kafka's log segments.

A segment is a sequence of records, each `length u32 | crc32 u32 | kind u8 | a u64 | b u64 |
payload` (little endian; the CRC covers kind, a, b and payload). Kinds:
- DATA (a = sequence number): one sanitized ExportTraceServiceRequest, protobuf bytes;
- TAKEN (a..b): records a..b were taken together as one batch (so a replay rebuilds the
  same batch, with the same batch id, hence the same sink dedup tokens / budget keys);
- DONE (a..b): that batch was released by every sink and no processor holds its spans.

Durability (`fsync`): `always` fsyncs before every acknowledgement (no delay; writes that
arrive during an fsync share the next one), `batch` (default) group-commits at most every
`batch_interval` seconds and acknowledgements wait for that fsync, `off` leaves it to the
OS page cache (survives kill -9, not power loss). TAKEN markers are made durable before
their batch is processed (except with `off`).

Segments are deleted oldest first, once every DATA record in them belongs to a DONE batch;
the log is bounded by `max_bytes` over all segment files (a full log refuses appends, which
the receivers answer with 429 / RESOURCE_EXHAUSTED). On open, a torn or corrupt record is
counted (`tracepipe_wal_corrupt_records_total`) and skipped; when its length cannot be
trusted the rest of that segment is skipped. Everything else not DONE is handed back for
replay, in log order, with its TAKEN grouping.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import secrets
import struct
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.telemetry import Telemetry

log = logging.getLogger("tracepipe.wal")

HEADER = struct.Struct("<IIBQQ")  # length, crc32, kind, a, b
CRC_PART = struct.Struct("<BQQ")
DATA, TAKEN, DONE = 1, 2, 3
MAX_RECORD = 1 << 30
SUFFIX = ".seg"


class FsyncPolicy(enum.Enum):
    ALWAYS = "always"
    BATCH = "batch"
    OFF = "off"


class WalFull(Exception):
    """The log holds `max_bytes`; retry once segments were released."""


class WalTooLarge(Exception):
    """One record larger than the whole log can ever hold."""


@dataclass
class ReplayBatch:
    """Records to run again after a restart; `first`/`last` are set when they were taken together."""

    records: list[tuple[int, bytes]]
    taken: bool


@dataclass
class _Segment:
    base: int  # first sequence number it may hold
    path: Path
    size: int = 0
    pending: set[int] = field(default_factory=set)  # its DATA records not yet in a DONE batch
    last_seq: int = -1
    fd: int | None = None

    @property
    def finished(self) -> bool:
        return not self.pending


def segment_name(base: int) -> str:
    return f"{base:020d}{SUFFIX}"


def encode(kind: int, a: int, b: int, payload: bytes = b"") -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(CRC_PART.pack(kind, a, b)))
    return HEADER.pack(len(payload), crc, kind, a, b) + payload


def read_segment(path: Path) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The valid records of a segment file, and how many corrupt ones were skipped."""
    buf = path.read_bytes()
    out: list[tuple[int, int, int, bytes]] = []
    corrupt = 0
    pos = 0
    n = len(buf)
    while pos < n:
        if n - pos < HEADER.size:
            corrupt += 1  # torn header at the tail
            break
        length, crc, kind, a, b = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if kind not in (DATA, TAKEN, DONE) or length > MAX_RECORD or end > n:
            corrupt += 1  # torn tail or a length we cannot trust: skip the rest of the segment
            break
        payload = buf[pos + HEADER.size:end]
        if zlib.crc32(payload, zlib.crc32(CRC_PART.pack(kind, a, b))) != crc:
            corrupt += 1  # framing intact, content damaged: skip this record only
        else:
            out.append((kind, a, b, payload))
        pos = end
    return out, corrupt


@dataclass
class WalStats:
    replayed: int = 0
    corrupt: int = 0
    segments_deleted: int = 0


class WriteAheadLog:
    """Append-only, segmented, CRC-checked log of OTLP requests (single event loop)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        fsync: FsyncPolicy | str = FsyncPolicy.BATCH,
        batch_interval: float = 0.005,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = FsyncPolicy(fsync)
        self.batch_interval = batch_interval
        self.telemetry = telemetry
        self.log_id = ""
        self.stats = WalStats()
        self._segments: list[_Segment] = []
        self._next_seq = 0
        self._total = 0
        self._to_close: list[int] = []
        self._written = 0  # records written, and how many of them an fsync covered
        self._synced = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._last_fsync = 0.0
        self._closed = False

    # --- open / replay ---------------------------------------------------------------

    def open(self) -> list[ReplayBatch]:
        """Open (or create) the log; return what must be replayed, in log order."""
        self.dir.mkdir(parents=True, exist_ok=True)
        id_path = self.dir / "wal.id"
        if id_path.exists():
            self.log_id = id_path.read_text().strip()
        if not self.log_id:
            self.log_id = secrets.token_hex(4)
            tmp = id_path.with_suffix(".tmp")
            tmp.write_text(self.log_id + "\n")
            os.replace(tmp, id_path)
            self._fsync_dir()
        # Pass 1: framing and markers only (payloads are dropped as soon as read), so opening
        # a large log holds one segment at a time plus what is still to be replayed.
        taken: dict[int, int] = {}
        done: dict[int, int] = {}
        paths = sorted(p for p in self.dir.iterdir() if p.name.endswith(SUFFIX) and p.stem.isdigit())
        for path in paths:
            seg = _Segment(base=int(path.stem), path=path, size=path.stat().st_size)
            records, corrupt = read_segment(path)
            if corrupt:
                log.warning("wal: %d corrupt or torn record(s) skipped in %s", corrupt, path.name)
                self.stats.corrupt += corrupt
            for kind, a, b, _payload in records:
                if kind == DATA:
                    seg.pending.add(a)
                    seg.last_seq = max(seg.last_seq, a)
                elif kind == TAKEN:
                    taken[a] = b
                else:
                    done[a] = b
            del records
            self._segments.append(seg)
            self._next_seq = max(self._next_seq, seg.base, seg.last_seq + 1)
        self._total = sum(s.size for s in self._segments)
        for first, last in done.items():
            self._mark_done(first, last)
        # Pass 2: the payloads still to be delivered.
        data: dict[int, bytes] = {}
        for seg in self._segments:
            if seg.pending:
                for kind, a, _b, payload in read_segment(seg.path)[0]:
                    if kind == DATA and a in seg.pending:
                        data[a] = payload
        replay: list[ReplayBatch] = []
        seqs = sorted(data)
        i = 0
        while i < len(seqs):
            s = seqs[i]
            last = taken.get(s)
            if last is not None and all(q in data for q in range(s, last + 1)):
                replay.append(ReplayBatch([(q, data[q]) for q in range(s, last + 1)], taken=True))
                i += last - s + 1
                continue
            replay.append(ReplayBatch([(s, data[s])], taken=False))
            i += 1
        self.stats.replayed = len(seqs)
        self._new_segment()  # never append after a possibly torn tail
        self._collect()
        self._gauges()
        if self.telemetry is not None:
            self.telemetry.wal_replayed_records.inc(len(seqs))
            self.telemetry.wal_corrupt_records.inc(self.stats.corrupt)
        return replay

    # --- appends ---------------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        return self._total

    @property
    def segments(self) -> int:
        return len(self._segments)

    def record_size(self, payload_len: int) -> int:
        return HEADER.size + payload_len

    def has_room(self, payload_len: int) -> bool:
        return self._total + self.record_size(payload_len) <= self.max_bytes

    def append(self, payload: bytes) -> int:
        """Write one DATA record (page cache); returns its sequence number. `durable()` waits for fsync."""
        if self._closed:
            raise RuntimeError("write-ahead log is closed")
        size = self.record_size(len(payload))
        if size > self.max_bytes:
            raise WalTooLarge(f"record of {size} bytes exceeds wal.max_bytes ({self.max_bytes})")
        if self._total + size > self.max_bytes:
            raise WalFull
        seq = self._next_seq
        self._write(encode(DATA, seq, 0, payload))
        self._next_seq += 1
        seg = self._segments[-1]
        seg.pending.add(seq)
        seg.last_seq = seq
        return seq

    def mark_taken(self, first: int, last: int) -> None:
        self._write(encode(TAKEN, first, last))

    def _write(self, rec: bytes) -> None:
        seg = self._segments[-1]
        if seg.size >= self.segment_bytes:
            seg = self._rotate()
        assert seg.fd is not None
        view = memoryview(rec)
        try:
            while view:
                n = os.write(seg.fd, view)
                view = view[n:]
        except OSError:
            # e.g. ENOSPC: cut the partial record off so later records are not behind a torn one
            with contextlib.suppress(OSError):
                os.ftruncate(seg.fd, seg.size)
            raise
        seg.size += len(rec)
        self._total += len(rec)
        self._written += 1
        if self.telemetry is not None:
            self.telemetry.wal_bytes.set(self._total)

    def _new_segment(self) -> _Segment:
        base = self._next_seq
        path = self.dir / segment_name(base)
        if path.exists():  # an empty segment from a crash right after rotation: reuse the name
            path.unlink()
            self._segments = [s for s in self._segments if s.path != path]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        seg = _Segment(base=base, path=path, fd=fd)
        self._segments.append(seg)
        if self.fsync is not FsyncPolicy.OFF:
            self._fsync_dir()
        self._gauges()
        return seg

    def _rotate(self) -> _Segment:
        old = self._segments[-1]
        if old.fd is not None:
            if self.fsync is FsyncPolicy.OFF:
                os.close(old.fd)
            else:
                self._to_close.append(old.fd)  # the committer fsyncs, then closes it
            old.fd = None
        seg = self._new_segment()
        self._collect()
        return seg

    # --- durability ------------------------------------------------------------------

    async def durable(self) -> None:
        """Return once everything written so far is on disk (per the fsync policy)."""
        if self.fsync is FsyncPolicy.OFF or (self._synced >= self._written and not self._to_close):
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if self._committer is None or self._committer.done():
            self._wake = asyncio.Event()
            self._committer = asyncio.create_task(self._commit_loop(), name="tracepipe-wal-commit")
        assert self._wake is not None
        self._wake.set()
        await asyncio.shield(fut)

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        while not self._closed or self._waiters:
            await self._wake.wait()
            self._wake.clear()
            if self.fsync is FsyncPolicy.BATCH:
                wait = self._last_fsync + self.batch_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            waiters, self._waiters = self._waiters, []
            if not waiters:
                continue
            fds = list(self._to_close)
            self._to_close.clear()
            cur = self._segments[-1].fd if self._segments else None
            target = self._written
            self._last_fsync = time.monotonic()
            try:
                await asyncio.to_thread(self._sync_fds, fds, cur)
            except BaseException as e:
                for w in waiters:
                    if not w.done():
                        w.set_exception(OSError(f"wal fsync failed: {e}"))
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            if self.telemetry is not None:
                self.telemetry.wal_fsync_duration.observe(time.monotonic() - self._last_fsync)
            self._synced = max(self._synced, target)
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    @staticmethod
    def _sync_fds(closing: list[int], current: int | None) -> None:
        for fd in closing:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if current is not None:
            with contextlib.suppress(OSError):  # closed by a rotation meanwhile: fsynced next round
                os.fsync(current)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- release / deletion ------------------------------------------------------------

    def mark_done(self, first: int, last: int) -> None:
        """Batch first..last is released by every sink and held by no processor."""
        if self._closed:
            return
        self._write(encode(DONE, first, last))
        self._mark_done(first, last)
        self._collect()

    def _mark_done(self, first: int, last: int) -> None:
        for seg in self._segments:
            if seg.pending and seg.base <= last and seg.last_seq >= first:
                for seq in range(max(first, seg.base), min(last, seg.last_seq) + 1):
                    seg.pending.discard(seq)

    def _collect(self) -> None:
        """Delete finished segments, oldest first, never the active one."""
        while len(self._segments) > 1 and self._segments[0].finished and self._segments[0].fd is None:
            seg = self._segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
            self._total -= seg.size
            self.stats.segments_deleted += 1
        self._gauges()

    def _gauges(self) -> None:
        if self.telemetry is not None:
            self.telemetry.wal_bytes.set(self._total)
            self.telemetry.wal_segments.set(len(self._segments))

    async def close(self) -> None:
        """Fsync and close (a clean shutdown)."""
        if self._closed:
            return
        if self.fsync is not FsyncPolicy.OFF and (self._synced < self._written or self._to_close):
            await self.durable()
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(BaseException):
                await self._committer
        fds = [*self._to_close, *(s.fd for s in self._segments if s.fd is not None)]
        self._to_close.clear()
        for s in self._segments:
            s.fd = None
        for fd in fds:
            with contextlib.suppress(OSError):
                if self.fsync is not FsyncPolicy.OFF:
                    os.fsync(fd)
                os.close(fd)


def parse_batch_id(batch_id: str) -> tuple[int, int] | None:
    """`wal-<log id>-<first>-<last>` (optionally `/pipeline`) -> (first, last)."""
    if not batch_id.startswith("wal-"):
        return None
    parts = batch_id.split("/", 1)[0].split("-")
    if len(parts) != 4:
        return None
    try:
        return int(parts[2]), int(parts[3])
    except ValueError:
        return None


def held_ranges(batch_ids: Iterable[str]) -> set[tuple[int, int]]:
    return {r for r in map(parse_batch_id, batch_ids) if r is not None}
