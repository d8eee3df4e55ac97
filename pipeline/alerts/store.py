"""AlertStore: the active alerts and the recent alert events (GET /api/alerts, `tracepipe alerts`).

In memory, and with `path` also in a JSONL file (`<data_dir>/alerts/alerts.jsonl` in the
runtimes) so that the history and the active set survive a restart: every event is appended
as one line when it is applied; opening the store replays the file. The file is bounded: when
it holds more than twice `history + max_active` lines it is rewritten (atomically, through a
temporary file) with only what the store keeps: the active alerts (`{"active": event}`) and
the recent events (`{"event": event}`). `forget` and `scrub_trace` (deletion) rewrite it at
once, so what is forgotten is gone from the disk too. The file is created 0600. `read_only`
loads the file and never writes it (`tracepipe alerts` when no pipeline answers). A line that
does not parse (a torn last write) is skipped and counted in `skipped_lines`.

Anomaly alerts are active from `firing` until `resolved` (by `fingerprint`). Budget threshold
events (type `budget.threshold`, one-shot) are active until their period resets (`reset_at`):
one entry per budget, period and id, the highest threshold crossed replacing the lower.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("tracepipe.alerts")

BUDGET_TYPE = "budget.threshold"


def _active_key(event: dict[str, Any]) -> str | None:
    fp = event.get("fingerprint")
    if fp:
        return str(fp)
    if event.get("type") == BUDGET_TYPE:
        return "budget:{}:{}:{}:{}:{}".format(
            event.get("sink", ""), event.get("budget", ""), event.get("period_start", ""),
            event.get("tenant", ""), event.get("id", ""),
        )  # fmt: skip
    return None


def _expired(event: dict[str, Any], now: datetime | None) -> bool:
    """A budget alert is over once its period has reset."""
    reset = event.get("reset_at")
    if event.get("type") != BUDGET_TYPE or not isinstance(reset, str):
        return False
    try:
        at = datetime.fromisoformat(reset)
    except ValueError:
        return False
    if at.tzinfo is None:
        return False
    return at <= (now or datetime.now(at.tzinfo))


class AlertStore:
    """Keeps one entry per active alert and the last `history` events.

    `apply(event)` is synchronous and O(1) in memory (plus one appended line with a `path`):
    the router calls it inside `publish`, so the API sees an alert the moment it was raised.
    """

    def __init__(
        self, history: int = 500, max_active: int = 1000, path: str | Path | None = None, *, read_only: bool = False
    ) -> None:
        self.max_active = max_active
        self.history = history
        self._active: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent: deque[dict[str, Any]] = deque(maxlen=history)
        self.path = Path(path) if path is not None else None
        self.skipped_lines = 0
        self._lines = 0
        self._fd: int | None = None
        self.read_only = read_only
        if self.path is not None:
            self._load()

    # --- persistence -----------------------------------------------------------------------

    def _load(self) -> None:
        assert self.path is not None
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    self._lines += 1
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        self.skipped_lines += 1
                        continue
                    if isinstance(rec, dict) and isinstance(rec.get("active"), dict):
                        key = _active_key(rec["active"])
                        if key:
                            self._active[key] = rec["active"]
                            self._active.move_to_end(key)
                    elif isinstance(rec, dict) and isinstance(rec.get("event"), dict):
                        self._apply(rec["event"])
                    else:
                        self.skipped_lines += 1
            while len(self._active) > self.max_active:
                self._active.popitem(last=False)
            if self.skipped_lines:
                log.warning("alert history %s: %d unreadable line(s) skipped", self.path, self.skipped_lines)
        if not self.read_only:
            self._rewrite()  # compact what was loaded, and open for appending

    def _open(self) -> None:
        assert self.path is not None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _append(self, rec: dict[str, Any]) -> None:
        if self.path is None or self.read_only:
            return
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            os.write(self._fd, (json.dumps(rec, default=str, separators=(",", ":")) + "\n").encode())
            self._lines += 1
            if self._lines > 2 * (self.history + self.max_active):
                self._rewrite()
        except OSError as e:  # the alert still counts in memory; the file catches up at the next rewrite
            log.warning("alert history %s: write failed: %s", self.path, e)

    def _rewrite(self) -> None:
        """The file, replaced atomically by the active alerts and the recent events."""
        if self.path is None or self.read_only:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        recent_ids = {id(e) for e in self._recent}
        lines = [{"active": e} for e in self._active.values() if id(e) not in recent_ids]
        lines += [{"event": e} for e in self._recent]
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for rec in lines:
                    f.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            os.replace(tmp, self.path)
            self._lines = len(lines)
            self._open()
        except OSError as e:
            log.warning("alert history %s: rewrite failed: %s", self.path, e)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # --- events ----------------------------------------------------------------------------

    def apply(self, event: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Record an event. Returns (changed, evicted): whether the active set changed, and
        an older active alert dropped to stay within max_active."""
        out = self._apply(event)
        self._append({"event": event})
        return out

    def _apply(self, event: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        self._recent.append(event)
        key = _active_key(event)
        if not key:
            return False, None
        if event.get("state") == "firing":
            if event.get("type") == BUDGET_TYPE:
                before = self._active.get(key)
                if before is not None and (before.get("threshold") or 0) > (event.get("threshold") or 0):
                    return False, None  # a lower threshold delivered late (redelivery)
            self._active[key] = event
            self._active.move_to_end(key)
            evicted = None
            if len(self._active) > self.max_active:
                _, evicted = self._active.popitem(last=False)
            return True, evicted
        if event.get("state") == "resolved":
            return self._active.pop(key, None) is not None, None
        return False, None

    def active(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Active alerts, newest first. Budget alerts of a period that has reset are over: they
        leave the active set here (the history keeps them)."""
        over = [k for k, e in self._active.items() if _expired(e, now)]
        for k in over:
            del self._active[k]
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
        if gone or dropped:
            self._rewrite()
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
        if changed:
            self._rewrite()
        return changed

    def __len__(self) -> int:
        return len(self._active)
