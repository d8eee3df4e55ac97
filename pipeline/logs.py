"""Structured logging: plain text or one JSON object per line.

Log lines name components, counts and reasons; they never carry span attribute values
(prompts, completions, user data) nor span names. Components log through
`logging.getLogger("tracepipe.<area>")`. A value that must appear in a log line (an unpriced
model name) goes through `safe_value` first: redacted with every built-in rule (secrets and
PII, disguises included), stripped of control and format characters (no forged log lines),
cut to a short length.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import unicodedata
from functools import cache
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


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
    characters (a cut value ends in `...`)."""
    text = value if isinstance(value, str) else str(value)
    text = _scanner().redact_text(text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() and unicodedata.category(c) != "Cf" else "?" for c in text)
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text
