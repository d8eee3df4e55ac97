"""Terminal output for the CLI: colour, tables cut to the terminal width, money.

`Term` says how to write: `color` (ANSI styles on or off) and `width` (columns to fit in;
None: do not cut). `detect()` picks them the way modern CLIs do:
- colour: `--color` forces it on, `--no-color` off; else off when `NO_COLOR` is set (any
  non-empty value, https://no-color.org) or `TERM=dumb`, on only when the output is a TTY;
- width: `COLUMNS` when set, else the terminal's width when the output is a TTY, else None
  (piped output keeps whole rows, for grep and friends).

`table()` lays out rows: numeric and key columns (trace ids) are never cut; text columns
are ellipsised (at the end, or in the middle for ids and names whose tail matters) down to a
minimum, and when that is not enough the columns with a `drop` rank go, lowest rank first.
Widths are measured on plain text; styles are applied after padding.

`fmt_usd()` is the one money format of every command.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Literal

ELLIPSIS = "…"
GAP = "  "

_CODES = {
    "bold": "1", "dim": "2", "underline": "4",
    "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "cyan": "36",
}  # fmt: skip


@dataclass(frozen=True)
class Term:
    color: bool = False
    width: int | None = None

    def style(self, text: str, *styles: str) -> str:
        """`text` wrapped in the ANSI codes of `styles` (bold, dim, red, ...) when colour is on."""
        if not self.color or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


PLAIN = Term()


def detect(color: bool | None = None, stream: IO[str] | None = None) -> Term:
    """The Term for writing to `stream` (default stdout); `color` is the --color/--no-color flag."""
    stream = stream if stream is not None else sys.stdout
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    if color is None:
        color = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    width: int | None = None
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        width = int(columns)
    elif tty:
        width = shutil.get_terminal_size().columns
    return Term(color=bool(color), width=width)


# --- money ---------------------------------------------------------------------------------


def fmt_usd(value: float | None) -> str:
    """Money with three significant digits below $1 and cents above, trailing zeros of the
    fraction dropped down to cents: $0, $0.0000001, $0.0123, $0.025, $1.50, $12,345.68;
    "-" when unpriced (None). Below a nanodollar: $1.2e-10."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    sign = "-" if value < 0 else ""
    mag = abs(value)
    if mag < 1e-9:
        return f"{sign}${mag:.2g}"
    if mag >= 1:
        return f"{sign}${mag:,.2f}"
    decimals = -math.floor(math.log10(mag)) + 2
    text = f"{mag:.{decimals}f}"
    if text.startswith("1."):  # 0.9999 rounds up to 1.00
        return f"{sign}$1.00"
    whole, frac = text.split(".")
    return f"{sign}${whole}.{frac.rstrip('0').ljust(2, '0')}"


def unpriced_note(count: int, what: str = "call") -> str:
    """" (3 unpriced calls not included)", or "" when there are none."""
    if not count:
        return ""
    return f" ({count} unpriced {what}{'s' if count != 1 else ''} not included)"


def total_line(cost: float | None, unpriced: int, what: str = "call", prefix: str = "total") -> str:
    """'total $1.23 (3 unpriced calls not included)'; 'total unpriced' when nothing has a price."""
    if cost is None:
        return f"{prefix} unpriced" + (f" ({unpriced} unpriced {what}{'s' if unpriced != 1 else ''})" if unpriced
                                       else "")
    return f"{prefix} {fmt_usd(cost)}{unpriced_note(unpriced, what)}"


# --- cutting ---------------------------------------------------------------------------------


def ellipsize(text: str, width: int, where: Literal["end", "middle"] = "end") -> str:
    """`text` cut to `width` characters with an ellipsis at the end or in the middle."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return ELLIPSIS
    if where == "middle":
        head = width // 2
        tail = width - 1 - head
        return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")
    return text[: width - 1] + ELLIPSIS


@dataclass
class Col:
    """One table column. kind: "num" (right-aligned, never cut), "key" (never cut: an id you
    copy), "text" (cut at `cut`, not below `min_width`). `drop`: columns with a rank may be left
    out when the table does not fit, lowest rank first. `style(cell) -> styles` colours a cell."""

    header: str
    kind: Literal["num", "key", "text"] = "text"
    cut: Literal["end", "middle"] = "end"
    min_width: int = 6
    drop: int | None = None
    style: Callable[[str], Sequence[str]] | None = field(default=None)

    @property
    def right(self) -> bool:
        return self.kind == "num"


SOFT_WIDTH = 16  # text columns shrink to this before any column is dropped


def _fit(cols: list[Col], natural: list[int], width: int) -> tuple[list[int], list[int]]:
    """(column indexes kept, their widths) so that the row fits `width` where it can: text
    columns shrink to SOFT_WIDTH, then droppable columns go (lowest rank first), then text
    columns shrink down to their min_width."""
    keep = list(range(len(cols)))

    def shrink(ix: list[int], soft: bool) -> tuple[dict[int, int], int]:
        widths = {i: natural[i] for i in ix}
        excess = sum(widths.values()) + len(GAP) * (len(ix) - 1) - width

        def floor(i: int) -> int:
            c = cols[i]
            if c.kind != "text":
                return natural[i]
            return min(natural[i], max(c.min_width, SOFT_WIDTH if soft else 1))

        while excess > 0:
            shrinkable = [i for i in ix if widths[i] > floor(i)]
            if not shrinkable:
                break
            i = max(shrinkable, key=lambda j: (widths[j] - floor(j), j))
            widths[i] -= 1
            excess -= 1
        return widths, excess

    while True:
        widths, excess = shrink(keep, soft=True)
        droppable = [i for i in keep if cols[i].drop is not None]
        if excess <= 0:
            return keep, [widths[i] for i in keep]
        if not droppable:
            widths, _ = shrink(keep, soft=False)
            return keep, [widths[i] for i in keep]
        gone = min(droppable, key=lambda j: (cols[j].drop, -j))
        keep.remove(gone)


def table(cols: list[Col], rows: list[list[str]], term: Term = PLAIN, *, total_rows: int = 0) -> str:
    """Header and rows (the last `total_rows` rows styled as totals), fitted to `term.width`."""
    natural = [max(len(c.header), *(len(r[i]) for r in rows)) if rows else len(c.header) for i, c in enumerate(cols)]
    if term.width is None:
        keep, widths = list(range(len(cols))), natural
    else:
        keep, widths = _fit(cols, natural, term.width)

    def cell(i: int, w: int, text: str, row_styles: Sequence[str]) -> str:
        c = cols[i]
        if len(text) > w:
            text = ellipsize(text, w, c.cut)
        padded = text.rjust(w) if c.right else text.ljust(w)
        styles = list(row_styles)
        if c.style is not None and not row_styles:
            styles += list(c.style(text))
        if not styles or not text.strip():
            return padded
        pad = padded[: len(padded) - len(padded.lstrip())] if c.right else ""
        trail = "" if c.right else padded[len(text):]
        return pad + term.style(text, *styles) + trail

    def line(cells: list[str], row_styles: Sequence[str]) -> str:
        out = GAP.join(cell(i, w, cells[i], row_styles) for i, w in zip(keep, widths, strict=True))
        return out.rstrip()

    body_end = len(rows) - total_rows
    out = [line([c.header for c in cols], ("bold",))]
    out += [line(r, ()) for r in rows[:body_end]]
    out += [line(r, ("bold",)) for r in rows[body_end:]]
    return "\n".join(out)


def fit_line(text: str, term: Term, where: Literal["end", "middle"] = "end") -> str:
    """One free-form line cut to the terminal width."""
    return text if term.width is None else ellipsize(text, term.width, where)


def error_style(cell: str) -> Sequence[str]:
    """Red for a non-zero error count."""
    return ("red",) if cell.strip() not in ("", "0", "-") else ()


def money_style(cell: str) -> Sequence[str]:
    return ("yellow",) if cell.startswith("$") else ("dim",)


def dim_dash(cell: str) -> Sequence[str]:
    return ("dim",) if cell in ("-", "(none)") else ()

