"""AlertStore: the active alerts and the recent alert events, in memory (GET /api/alerts)."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any


class AlertStore:
    """Keeps one entry per active alert (by fingerprint) and the last `history` events.

    `apply(event)` is O(1) and synchronous: the router calls it inside `publish`, so the
    API sees an alert the moment the processor raised it.
    """

    def __init__(self, history: int = 500, max_active: int = 1000) -> None:
        self.max_active = max_active
        self._active: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent: deque[dict[str, Any]] = deque(maxlen=history)

    def apply(self, event: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Record an event. Returns (changed, evicted): whether the active set changed, and
        an older active alert dropped to stay within max_active."""
        self._recent.append(event)
        fp = event.get("fingerprint")
        if not fp:
            return False, None
        if event.get("state") == "firing":
            self._active[fp] = event
            self._active.move_to_end(fp)
            evicted = None
            if len(self._active) > self.max_active:
                _, evicted = self._active.popitem(last=False)
            return True, evicted
        if event.get("state") == "resolved":
            return self._active.pop(fp, None) is not None, None
        return False, None

    def active(self) -> list[dict[str, Any]]:
        """Active alerts, newest first."""
        return list(reversed(self._active.values()))

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recent events (firing and resolved), newest first."""
        out: list[dict[str, Any]] = []
        for event in reversed(self._recent):
            if len(out) >= limit:
                break
            out.append(event)
        return out

    def forget(self, match: Callable[[dict[str, Any]], bool]) -> int:
        """Drop every active alert and recent event `match` selects (deletion); returns how many."""
        gone = [fp for fp, e in self._active.items() if match(e)]
        for fp in gone:
            del self._active[fp]
        kept = [e for e in self._recent if not match(e)]
        dropped = len(self._recent) - len(kept)
        self._recent.clear()
        self._recent.extend(kept)
        return len(gone) + dropped

    def scrub_trace(self, trace_id: str) -> int:
        """Remove a trace id from the events' `example_trace_ids`; returns the events changed."""
        changed = 0
        seen: set[int] = set()
        for e in [*self._active.values(), *self._recent]:
            ids = e.get("example_trace_ids")
            if id(e) in seen or not isinstance(ids, list) or trace_id not in ids:
                continue
            seen.add(id(e))
            e["example_trace_ids"] = [t for t in ids if t != trace_id]
            changed += 1
        return changed

    def __len__(self) -> int:
        return len(self._active)
