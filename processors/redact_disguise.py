"""Disguises the redact processor sees through: a normalised view of a value, mapped back.

A secret can reach tracepipe lightly disguised, on purpose or by the way the data was
serialised:

- zero-width and other Unicode format characters (category Cf: U+200B..U+200F, U+2060..,
  U+FEFF, the soft hyphen U+00AD, ...) inserted inside the secret;
- JSON `\\uXXXX` escapes (message JSON such as gen_ai.input.messages is a JSON string:
  `"\\u0073k-proj-..."` is `sk-proj-...`);
- percent-encoding (`sk%2Dproj%2D...`, `%73k-...`), UTF-8 sequences included;
- HTML character references (`&#115;k-...`, `&#x73;`, `&amp;`, named entities).

`PREFILTERS` are byte patterns added to the batch prefilter: only values that contain one
of them get a normalised view (`unveil`), which is scanned again; each character of the
view knows the range of the original it came from, so a finding in the view masks the
original text it was made of (the escapes and invisible characters included).

Whole-value base64 (`b64_text`): a value made only of base64 characters (12 or more) is
decoded; if the bytes are printable UTF-8 text, that text is scanned and any finding masks
the whole value. Base64 *inside* a larger value is not decoded (images, ids and digests
would make that costly and noisy).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import sys
import unicodedata
from functools import cache

MAX_ROUNDS = 2  # a view is normalised again (double encoding) at most this many times


@cache
def _cf_ranges() -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for c in range(sys.maxunicode + 1):
        if unicodedata.category(chr(c)) == "Cf":
            if out and out[-1][1] == c - 1:
                out[-1] = (out[-1][0], c)
            else:
                out.append((c, c))
    return tuple(out)


def _cf_class() -> str:
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in _cf_ranges())


def _cf_bytes_pattern() -> str:
    """The UTF-8 encodings of every Cf character, as one alternation of byte escapes."""
    alts = []
    for a, b in _cf_ranges():
        for c in range(a, b + 1):
            alts.append("".join(f"\\x{x:02x}" for x in chr(c).encode("utf-8")))
    return "(?:" + "|".join(alts) + ")"


# Byte patterns for the batch prefilter, one per disguise (their ids follow the rules').
PREFILTERS: tuple[tuple[str, str], ...] = (
    ("json_unicode_escape", r"\\u[0-9A-Fa-f]{4}"),
    ("percent_encoding", r"%[0-9A-Fa-f]{2}"),
    ("html_entity", r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"),
    ("format_character", _cf_bytes_pattern()),
)
# A whole value of base64 characters, between the NUL separators of the batch buffer.
B64_PREFILTER = r"\x00[A-Za-z0-9+/_-]{12,}={0,2}\x00"

_TOKEN = re.compile(
    r"\\u([0-9A-Fa-f]{4})"
    r"|((?:%[0-9A-Fa-f]{2})+)"
    r"|&(#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
    r"|([" + _cf_class() + r"]+)"
)


def _percent_chars(run: str) -> list[tuple[str, int, int]]:
    """(char, start, end) in `run` for a run of %XX: UTF-8 where it decodes, else byte by byte."""
    raw = bytes.fromhex(run.replace("%", ""))
    out: list[tuple[str, int, int]] = []
    i = 0
    while i < len(raw):
        b = raw[i]
        n = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
        try:
            ch = raw[i : i + n].decode("utf-8")
        except UnicodeDecodeError:
            ch, n = chr(b), 1
        out.append((ch, 3 * i, 3 * (i + n)))
        i += n
    return out


def _unveil_once(text: str) -> tuple[str, list[int], list[int]] | None:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    changed = False
    for m in _TOKEN.finditer(text):
        a, b = m.span()
        for i in range(last, a):
            chars.append(text[i])
            starts.append(i)
            ends.append(i + 1)
        last = b
        if m.group(1) is not None:
            chars.append(chr(int(m.group(1), 16)))
            starts.append(a)
            ends.append(b)
            changed = True
        elif m.group(2) is not None:
            for ch, s, e in _percent_chars(m.group(2)):
                chars.append(ch)
                starts.append(a + s)
                ends.append(a + e)
            changed = True
        elif m.group(3) is not None:
            token = m.group(0)
            decoded = html.unescape(token)
            if decoded == token:
                for i in range(a, b):
                    chars.append(text[i])
                    starts.append(i)
                    ends.append(i + 1)
            else:
                for ch in decoded:
                    chars.append(ch)
                    starts.append(a)
                    ends.append(b)
                changed = True
        else:  # format characters: removed from the view
            changed = True
            if ends:
                ends[-1] = b  # a finding ending just before them covers them
    if not changed:
        return None
    for i in range(last, len(text)):
        chars.append(text[i])
        starts.append(i)
        ends.append(i + 1)
    return "".join(chars), starts, ends


def unveil(text: str) -> tuple[str, list[int], list[int]] | None:
    """The normalised view of `text`, with per character the [start, end) of the original it
    came from; None when there is nothing to normalise. Double encodings are undone up to
    MAX_ROUNDS times (e.g. `%5Cu0073` -> `\\u0073` -> `s`)."""
    view = _unveil_once(text)
    if view is None:
        return None
    out, starts, ends = view
    for _ in range(MAX_ROUNDS - 1):
        again = _unveil_once(out)
        if again is None:
            break
        out, s2, e2 = again
        starts = [starts[i] for i in s2]
        ends = [ends[i - 1] for i in e2]
    return out, starts, ends


def map_back(starts: list[int], ends: list[int], a: int, b: int) -> tuple[int, int]:
    """The original range of the view's [a, b)."""
    return starts[a], ends[b - 1]


_B64_WHOLE = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def b64_text(value: str) -> str | None:
    """The text a whole-value base64 string encodes, if it is printable UTF-8; else None."""
    if not _B64_WHOLE.fullmatch(value):
        return None
    body = value.rstrip("=")
    if len(body) % 4 == 1:
        return None
    try:
        if "-" in body or "_" in body:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        else:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return text if printable >= 0.95 * len(text) else None


def strip_format_chars(text: str) -> str:
    """`text` without Unicode format characters (used on attribute keys before allow/deny matching)."""
    if text.isascii():
        return text
    return "".join(c for c in text if unicodedata.category(c) != "Cf")
