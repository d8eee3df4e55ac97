"""State that stateful processors keep between batches (anomaly windows, sampling buffers).

Processors ask for named tables and use them like dicts. The embedded runtime backs them
with local memory; the distributed worker backs them with Faust tables (changelog
topics), so a restarted or rebalanced worker finds its state again. Updates are made per
batch, never per event, which is what Faust's batch consumption allows.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol


class StateStore(Protocol):
    """Hands out named key/value tables. Keys are strings, values JSON-serialisable."""

    def table(self, name: str) -> MutableMapping[str, Any]: ...


class MemoryStateStore:
    """Tables in local memory: the embedded runtime's state (lost on restart)."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Any]] = {}

    def table(self, name: str) -> MutableMapping[str, Any]:
        return self._tables.setdefault(name, {})
