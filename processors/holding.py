"""What processors that hold spans per trace (tail sampling, trace context) tell the runtimes.

A holding processor keeps `_buffer: {trace id -> pending}`, each pending with the `batches` its
spans came from, and counts `_held_spans`. The runtimes read `held_batches()`: the embedded
write-ahead log keeps those batches' segments, the distributed worker does not commit past the
oldest of them, so a crash never loses held spans.
"""

from __future__ import annotations

from typing import Any


class HoldsSpans:
    _buffer: dict[str, Any]
    _held_spans: int

    def held_batches(self) -> set[str]:
        """Ids of the transport batches that still have spans held here."""
        out: set[str] = set()
        for pending in self._buffer.values():
            out |= pending.batches
        return out

    @property
    def held_traces(self) -> int:
        return len(self._buffer)

    @property
    def held_spans(self) -> int:
        return self._held_spans
