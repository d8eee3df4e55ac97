"""Errors of the OTLP codec."""

from __future__ import annotations


class OtlpDecodeError(ValueError):
    """A request body that is not a valid OTLP export request (malformed protobuf or JSON,
    invalid UTF-8, ids that are not hex of the right length). Receivers answer 400 /
    INVALID_ARGUMENT with `message`; it never carries attribute values."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
