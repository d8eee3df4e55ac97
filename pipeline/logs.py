"""Structured logging: plain text or one JSON object per line.

Log lines name components, counts and reasons; they never carry span attribute values
(prompts, completions, user data) nor span names. Components log through
`logging.getLogger("tracepipe.<area>")`. A value that must appear in a log line (an unpriced
model name) goes through `safe_value` first: redacted with every built-in rule (secrets and
PII, disguises included), stripped of control and format characters (no forged log lines),
cut to a short length. Tracebacks keep their frames and exception types, but only the
messages of exceptions that do not quote data (`safe_exception_text`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import unicodedata
from functools import cache
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

# Exceptions whose messages describe the environment or are written by tracepipe without
# values (SinkError, store errors): shown after safe_value. Any other exception's message may
# quote data (`could not convert string to float: '<a prompt>'`): withheld, the type and the
# traceback frames are logged.
_MESSAGE_MODULES = ("pipeline.", "sinks.", "processors.")


def _message_shown(exc: BaseException) -> bool:
    return isinstance(exc, OSError | TimeoutError | ImportError) or type(exc).__module__.startswith(_MESSAGE_MODULES)


def safe_exception_text(exc: BaseException | None) -> str:
    """A traceback for the log: frames and exception types as usual, the messages only of the
    exceptions `_message_shown` trusts (redacted and cut by safe_value), for the whole chain."""
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < 8:
        seen.add(id(exc))
        name = type(exc).__qualname__
        msg = safe_value(str(exc), 300) if _message_shown(exc) else "(message withheld: it may quote data)"
        parts.append(
            "Traceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__)) + f"{name}: {msg}"
        )
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is not None:
            parts.append("the exception above led to:")
        exc = nxt
    return "\n".join(reversed(parts)) if parts else ""


class TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return safe_exception_text(ei[1])


class JsonFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return safe_exception_text(ei[1])

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless debugging.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "aiohttp.access", "grpc"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


# Longer values are cut before redaction: what is shown is at most `limit` characters anyway,
# and a secret longer than this is no secret any rule knows.
_SCAN_CHARS = 4096


@cache
def _scanner() -> Any:
    """One redact processor with every built-in rule, for log lines and metric labels."""
    from pathlib import Path

    from pipeline.component import ComponentContext
    from pipeline.state import MemoryStateStore
    from pipeline.telemetry import Telemetry
    from processors.redact import RedactConfig, RedactProcessor

    ctx = ComponentContext("safe_value", Telemetry(), MemoryStateStore(), Path("."), logging.getLogger("tracepipe"))
    return RedactProcessor("safe_value", RedactConfig(), ctx)


def safe_value(value: object, limit: int = 64) -> str:
    """`value` as it may appear in a log line or a metric label: redacted by the built-in rules
    (secrets and PII), control and format characters replaced by `?`, cut to `limit`
    characters (a cut value ends in `...`). Only the first `_SCAN_CHARS` characters are ever
    looked at, so a 15 MiB value costs no more than a short one."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > _SCAN_CHARS
    text = _scanner().redact_text(text[:_SCAN_CHARS])
    if cut:
        text += "..."
    if not text.isprintable():
        text = "".join(c if c.isprintable() and unicodedata.category(c) != "Cf" else "?" for c in text)
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
