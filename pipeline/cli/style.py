"""--color/--no-color for the commands that print tables, and the Term they write with.

Without the flag, colour is on only when stdout is a TTY and `NO_COLOR` is unset; tables fit
`COLUMNS` or the terminal's width (see pipeline.query.term)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pipeline.query.term import Term, detect

COLOR_META = "tracepipe.color"


def color_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--color / --no-color (not passed to the command: read back with `current_term()`)."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool | None) -> None:
        if value is not None:
            ctx.meta[COLOR_META] = value

    return click.option(
        "--color/--no-color", "color", default=None, expose_value=False, callback=remember,
        help="Force colour on or off (default: on when writing to a terminal and NO_COLOR is unset). "
             "Rows fit COLUMNS or the terminal's width.",
    )(fn)  # fmt: skip


def current_term() -> Term:
    """The Term of the running command's stdout and --color/--no-color."""
    ctx = click.get_current_context(silent=True)
    flag = ctx.meta.get(COLOR_META) if ctx is not None else None
    return detect(flag)
