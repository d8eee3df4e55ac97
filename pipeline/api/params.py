"""Query-parameter parsing for the HTTP API: one place, with bounds.

Every parser raises `ParamError` (a ValueError) whose message names the parameter and what
it must be, never echoing more than a few characters of the value; handlers answer it with
400. Numbers must be finite and inside their range (no `inf`, `1e309`, `nan`, no integers
of hundreds of digits), durations are `15m`/`24h`/`7d`-style windows of at most 100 years,
text values are bounded in length, cursors must be ones a previous page returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pipeline.query.traces import decode_cursor, parse_since

__all__ = [
    "MAX_NUMBER_CHARS",
    "MAX_TEXT_CHARS",
    "ParamError",
    "check_known",
    "choice",
    "cursor",
    "duration",
    "finite_float",
    "integer",
    "text",
]

MAX_TEXT_CHARS = 512  # ids, names, tiers: longer is not a value this API stores
MAX_NUMBER_CHARS = 32  # a float or int parameter written with more characters is refused unparsed
MAX_DURATION_CHARS = 32
MAX_CURSOR_CHARS = 256


class ParamError(ValueError):
    """A bad query parameter; the message names it."""


def _show(value: str, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def check_known(q: Mapping[str, str], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise ParamError(f"{unknown[0][:64]}: unknown parameter (allowed: {', '.join(sorted(allowed))})")


def text(q: Mapping[str, str], name: str, default: str | None = None, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """A text value (None/default when absent or empty), at most `max_chars` characters."""
    value = q.get(name)
    if not value:
        return default
    if len(value) > max_chars:
        raise ParamError(f"{name}: longer than {max_chars} characters")
    return value


def choice(q: Mapping[str, str], name: str, options: tuple[str, ...], default: str | None = None) -> str | None:
    value = q.get(name)
    if not value:
        return default
    if value.lower() not in options:
        raise ParamError(f"{name}: must be one of {', '.join(options)}")
    return value.lower()


def integer(q: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer in [lo, hi]; `default` when absent."""
    value = q.get(name)
    if value is None or value == "":
        return default
    if len(value) > MAX_NUMBER_CHARS:
        raise ParamError(f"{name}: must be an integer between {lo} and {hi}")
    try:
        n = int(value)
    except ValueError:
        raise ParamError(f"{name}: must be an integer, not {_show(value)}") from None
    if not lo <= n <= hi:
        raise ParamError(f"{name}: must be between {lo} and {hi}")
    return n


def finite_float(q: Mapping[str, str], name: str, default: float | None, lo: float, hi: float) -> float | None:
    """A finite number in [lo, hi]; `default` when absent. inf, nan, 1e309 are refused."""
    value = q.get(name)
    if value is None or value == "":
        return default
    if len(value) > MAX_NUMBER_CHARS:
        raise ParamError(f"{name}: must be a number between {lo:g} and {hi:g}")
    try:
        x = float(value)
    except ValueError:
        raise ParamError(f"{name}: must be a number, not {_show(value)}") from None
    if not math.isfinite(x):
        raise ParamError(f"{name}: must be a finite number")
    if not lo <= x <= hi:
        raise ParamError(f"{name}: must be between {lo:g} and {hi:g}")
    return x


def duration(q: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """A look-back window such as 15m, 24h, 7d (units s, m, h, d, w; at most 100 years),
    returned as given once validated."""
    value = q.get(name)
    if not value:
        return default
    if len(value) > MAX_DURATION_CHARS:
        raise ParamError(f"{name}: {_show(value)} is not a duration like 15m, 24h or 7d")
    try:
        parse_since(value)
    except ValueError as e:
        raise ParamError(str(e).replace("since:", f"{name}:", 1)) from None
    return value


def cursor(q: Mapping[str, str], name: str = "cursor") -> str | None:
    """The opaque `next` cursor of a previous page."""
    value = q.get(name)
    if not value:
        return None
    if len(value) > MAX_CURSOR_CHARS:
        raise ParamError(f"{name}: not a cursor returned by a previous page")
    decode_cursor(value)
    return value
