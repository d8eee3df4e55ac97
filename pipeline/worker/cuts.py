"""Stable batch identities across redelivery: recorded cuts.

A worker takes whatever messages arrived within the batch timeout, so after a crash the
same offsets would come back cut differently and a sink's per-batch idempotency key
(`topic/partition/first-last`) would not match what was already stored. Before its sinks
are written, each batch's offset range is therefore recorded in a Faust table (changelog
topic, so it survives the worker and follows the partition on rebalance). A redelivered
message that falls inside a recorded range is re-cut into exactly that range, so the
batch gets the same id and the sinks drop it as a duplicate. The most recent ranges are
kept (not pruned by the committed offset, which Faust does not report reliably).

A recorded range that cannot be completed (its worker held the head for `hold_timeout`
and the rest never came) is processed `partial`: the runtime gives it an id of its own and
forgets the range, because reusing the range's id for a part of it would make a sink drop
the rest as a duplicate of what may never have been stored. That trades a possible
duplicate for a certain loss, and is counted.

`plan_batches` is the pure part: given the offsets available for one partition and the
recorded ranges, it says how to cut them and from where to hold messages back until a
recorded range is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int]  # first, last offset (inclusive)


@dataclass(frozen=True)
class PlannedBatch:
    start: int  # index into the offsets given
    stop: int  # exclusive
    first: int  # offsets naming the batch
    last: int
    redelivered: bool
    partial: bool = False  # a forced, incomplete redelivery of the recorded range first-last


def plan_batches(offsets: list[int], recorded: list[Range], *, force: bool = False) -> tuple[list[PlannedBatch], int]:
    """Cut sorted `offsets` of one partition into batches; returns (batches, held_from).

    Offsets inside a recorded range form exactly that range's batch; when the range is
    not complete yet, everything from its first offset on is held (`held_from` < len)
    unless `force`. Other offsets form new batches that never straddle a recorded range.
    """
    ranges = sorted(recorded)
    out: list[PlannedBatch] = []
    i, n = 0, len(offsets)
    while i < n:
        o = offsets[i]
        hit = next((r for r in ranges if r[0] <= o <= r[1]), None)
        j = i
        if hit is not None:
            while j < n and offsets[j] <= hit[1]:
                j += 1
            incomplete = offsets[j - 1] < hit[1]
            if incomplete and not force:
                return out, i
            out.append(PlannedBatch(i, j, hit[0], hit[1], True, partial=incomplete))
        else:
            nxt = min((r[0] for r in ranges if r[0] > o), default=None)
            while j < n and (nxt is None or offsets[j] < nxt):
                j += 1
            out.append(PlannedBatch(i, j, o, offsets[j - 1], False))
        i = j
    return out, n



def contiguous_run(offsets: list[int], start: int) -> int:
    """How many of the sorted, distinct `offsets` (all >= `start`) follow on from `start`
    without a hole: the messages a worker may process before it must re-read the hole."""
    n = 0
    for o in offsets:
        if o != start + n:
            break
        n += 1
    return n
