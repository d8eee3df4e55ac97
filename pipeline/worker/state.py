"""The state interface (pipeline.state.StateStore) backed by Faust tables.

Each named table is a Faust Table with a changelog topic co-partitioned with the span
topic: a processor's update made while the worker runs a batch of partition P goes to
changelog partition P, so the worker that owns P after a restart or rebalance recovers
it. The worker sets Faust's current event to the batch's last event while the chain
runs (`current_partition`), which is what Faust tables need to route a write; updates
are per batch, never per event.

Values must be JSON-serialisable and be assigned (`t[k] = v`): mutating a value in place
is not written to the changelog.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import MutableMapping
from typing import Any

log = logging.getLogger("tracepipe.worker.state")


class FaustStateStore:
    """Hands out Faust tables by name; create them before the app starts."""

    def __init__(self, app: Any, partitions: int, prefix: str = "state-") -> None:
        self.app = app
        self.partitions = partitions
        self.prefix = prefix
        self._tables: dict[str, Any] = {}
        self._started = False

    def table(self, name: str) -> MutableMapping[str, Any]:
        t = self._tables.get(name)
        if t is None:
            if self._started:
                log.warning("state table %r created after the worker started: it is not recovered on restart", name)
            t = self.app.Table(f"{self.prefix}{name}", partitions=self.partitions, key_type=str, value_type=None)
            self._tables[name] = t
        return t

    def mark_started(self) -> None:
        self._started = True

    @property
    def tables(self) -> dict[str, Any]:
        return dict(self._tables)


def current_partition(event: Any) -> contextlib.AbstractContextManager[None]:
    """Make `event` Faust's current event, so table writes go to its partition."""
    from pipeline.worker.faust_compat import current_event

    return current_event(event)
