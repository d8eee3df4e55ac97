"""Calendar periods in a time zone: the window [start, end) holding an instant.

Periods are aligned on the local calendar of their time zone (zoneinfo): an hour
starts on the local hour, a day at local midnight, a week on Monday, a month on the
1st. Windows are returned as UTC epoch seconds, which is also how counter keys name
their period, so every writer and reader agrees regardless of its own zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def period_window(period: str, tz: ZoneInfo, ts: float) -> tuple[int, int]:
    """(start, end) in epoch seconds of the `period` in `tz` containing instant `ts`."""
    local = datetime.fromtimestamp(ts, tz)
    if period == "hour":
        start = local.replace(minute=0, second=0, microsecond=0)
        start_ts = int(start.timestamp())
        if start_ts > ts:  # a DST fold picked the other hour
            start_ts -= 3600
        return start_ts, start_ts + 3600
    if period == "day":
        first = local.date()
        nxt = first + timedelta(days=1)
    elif period == "week":
        first = local.date() - timedelta(days=local.weekday())
        nxt = first + timedelta(days=7)
    elif period == "month":
        first = local.date().replace(day=1)
        nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return _midnight(first, tz), _midnight(nxt, tz)


def _midnight(d: date, tz: ZoneInfo) -> int:
    # Local midnight may not exist (a DST jump at 00:00): zoneinfo then maps it forward.
    return int(datetime.combine(d, time(0), tzinfo=tz).timestamp())


class PeriodClock:
    """Caches the last window of one (period, zone): spans of a batch share a window."""

    __slots__ = ("_end", "_start", "period", "tz")

    def __init__(self, period: str, tz: ZoneInfo) -> None:
        self.period = period
        self.tz = tz
        self._start = 0
        self._end = 0

    def window(self, ts: float) -> tuple[int, int]:
        if self._start <= ts < self._end:
            return self._start, self._end
        start, end = period_window(self.period, self.tz, ts)
        self._start, self._end = start, end
        return start, end


def iso(ts: float, tz: ZoneInfo | None = None) -> str:
    """Epoch seconds as ISO 8601 (UTC unless a zone is given)."""
    return datetime.fromtimestamp(ts, tz or UTC).isoformat()
