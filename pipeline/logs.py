"""Structured logging: plain text or one JSON object per line.

Log lines name components, counts and reasons; they never carry span attribute values
(prompts, completions, user data). Components log through `logging.getLogger("tracepipe.<area>")`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_VALUE_MAX_CHARS = 200

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def truncate_for_log(value: object, limit: int = LOG_VALUE_MAX_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, with how much was cut: for the few log lines
    that must name a client-supplied value (a model name, a component id). Only the first
    `limit` characters of a string are ever copied, so a 15 MiB value costs nothing."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}...(+{len(value) - limit} chars)"
    text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}...(+{len(text) - limit} chars)"
    return text


class JsonFormatter(logging.Formatter):
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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless debugging.
    for noisy in ("aiokafka", "kafka", "faust", "mode", "aiohttp.access", "grpc"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
