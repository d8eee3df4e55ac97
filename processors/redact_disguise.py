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

Whole-value base64 (`b64_text`): a value made only of base64 characters (12 or more, a
multiple of 4 long, mixed case) is decoded; if the bytes are printable UTF-8 text, that
text is scanned and any finding masks the whole value. Base64 *inside* a larger value is
not decoded (images, ids and digests would make that costly and noisy).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable
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
    # Escapes of ASCII and of the common invisible characters only: JSON of non-Latin text
    # (every character escaped) would otherwise make every such value a candidate.
    (
        "json_unicode_escape",
        r"\\u00[0-7][0-9A-Fa-f]|\\u(?:00[aA][dD]|180[eE]|200[b-fB-F]|202[a-eA-E]|206[0-9a-fA-F]|[fF][eE][fF][fF])",
    ),
    # Not %20: a space is never part of a secret (URLs of search queries are full of them).
    ("percent_encoding", r"%(?:[013-9A-Fa-f][0-9A-Fa-f]|2[1-9A-Fa-f])"),
    ("html_entity", r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"),
    ("format_character", _cf_bytes_pattern()),
)
# A whole value of base64 characters, between the NUL separators of the batch buffer.
# Mixed case only (the length is checked after): ids, digests and model names are all lowercase.
B64_PREFILTER = (
    r"\x00[A-Za-z0-9+/_-]*(?:[A-Z][A-Za-z0-9+/_-]*[a-z]|[a-z][A-Za-z0-9+/_-]*[A-Z])[A-Za-z0-9+/_-]*={0,2}\x00"
)

_TOKEN_PARTS = {
    "json_unicode_escape": r"\\u[0-9A-Fa-f]{4}",
    "percent_encoding": r"(?:%[0-9A-Fa-f]{2})+",
    "html_entity": r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});",
    "format_character": "",  # filled below (the Cf class)
}
KINDS = tuple(_TOKEN_PARTS)


_GROUP = {"json_unicode_escape": "u", "percent_encoding": "p", "html_entity": "h", "format_character": "f"}


@cache
def _token_regex(kinds: frozenset[str]) -> re.Pattern[str]:
    """One regex for the disguises in `kinds`; each in its named group (u, p, h, f)."""
    parts = []
    for kind in KINDS:
        if kind in kinds:
            body = _TOKEN_PARTS[kind] if kind != "format_character" else "[" + _cf_class() + "]+"
            parts.append(f"(?P<{_GROUP[kind]}>{body})")
    return re.compile("|".join(parts) or "(?!x)x")


def kinds_in(text: str) -> frozenset[str]:
    """The disguises `text` may carry, by cheap substring tests (for a view's second round)."""
    out = set()
    if "\\u" in text:
        out.add("json_unicode_escape")
    if "%" in text:
        out.add("percent_encoding")
    if "&" in text and ";" in text:
        out.add("html_entity")
    if not text.isascii():
        out.add("format_character")
    return frozenset(out)


def _percent_chars(run: str) -> list[tuple[str, int, int]]:
    """(char, start, end) in `run` for a run of %XX: UTF-8 where it decodes, else byte by byte."""
    raw = bytes.fromhex(run.replace("%", ""))
    if raw.isascii():
        return [(chr(b), 3 * i, 3 * i + 3) for i, b in enumerate(raw)]
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


class View:
    """A normalised view of a text: `text`, and `span(a, b)`, the range of the original that the
    view's [a, b) came from. Built from segments: a plain run maps one to one, a decoded token
    (escape, entity, multi-byte percent sequence) maps each of its characters to the whole token."""

    __slots__ = ("_starts", "_stride", "_vpos", "parent", "text")

    def __init__(self, text: str, vpos: list[int], starts: list[int], stride: list[int], parent: View | None) -> None:
        self.text = text
        self._vpos = vpos  # view offset where each segment starts
        self._starts = starts  # (original start, original end) of each segment, flat
        # Original characters per view character: 1 plain, 3 an ASCII %XX run, 0 a token whose
        # characters all map to the whole token (escape, entity, multi-byte percent sequence).
        self._stride = stride
        self.parent = parent

    def _orig(self, i: int, end: bool) -> int:
        k = bisect_right(self._vpos, i) - 1
        a, b = self._starts[2 * k], self._starts[2 * k + 1]
        stride = self._stride[k]
        if stride:
            return a + stride * (i - self._vpos[k] + (1 if end else 0))
        return b if end else a

    def span(self, a: int, b: int) -> tuple[int, int]:
        lo, hi = self._orig(a, False), self._orig(b - 1, True)
        if self.parent is not None:
            return self.parent.span(lo, hi)
        return lo, hi


def _unveil_once(text: str, kinds: frozenset[str], parent: View | None = None) -> View | None:
    pieces: list[str] = []
    vpos: list[int] = []
    starts: list[int] = []
    plain: list[int] = []
    pos = 0  # length of the view so far
    last = 0

    def seg(piece: str, a: int, b: int, is_plain: bool, stride: int = 0) -> None:
        nonlocal pos
        if not piece:
            return
        pieces.append(piece)
        vpos.append(pos)
        starts.extend((a, b))
        plain.append(1 if is_plain else stride)
        pos += len(piece)

    changed = False
    for m in _token_regex(kinds).finditer(text):
        a, b = m.span()
        if a > last:
            seg(text[last:a], last, a, True)
        last = b
        group = m.lastgroup
        token = m.group(0)
        if group == "u":
            seg(chr(int(token[2:], 16)), a, b, False)
            changed = True
        elif group == "p":
            raw = bytes.fromhex(token.replace("%", ""))
            if raw.isascii():  # one segment, three original characters per view character
                seg(raw.decode("ascii"), a, b, False, 3)
            else:
                for ch, s, e in _percent_chars(token):
                    seg(ch, a + s, a + e, False)
            changed = True
        elif group == "h":
            decoded = html.unescape(token)
            if decoded == token:
                seg(token, a, b, True)
            else:
                seg(decoded, a, b, False)
                changed = True
        else:  # format characters: removed from the view (a finding around them covers them)
            changed = True
    if not changed:
        return None
    if last < len(text):
        seg(text[last:], last, len(text), True)
    return View("".join(pieces), vpos, starts, plain, parent)


def unveil(text: str, kinds: Iterable[str] | None = None, rounds: int = MAX_ROUNDS) -> View | None:
    """The normalised view of `text` (see View); None when there is nothing to normalise.
    `kinds`: the disguises to undo (the batch prefilter says which may be there; default:
    found by `kinds_in`). Double encodings are undone up to MAX_ROUNDS times
    (`%5Cu0073` -> `\\u0073` -> `s`)."""
    view = _unveil_once(text, frozenset(kinds) if kinds is not None else kinds_in(text))
    if view is None:
        return None
    for _ in range(rounds - 1):
        again_kinds = kinds_in(view.text)
        again = _unveil_once(view.text, again_kinds, view) if again_kinds else None
        if again is None:
            break
        view = again
    return view


_B64_WHOLE = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def b64_text(value: str) -> str | None:
    """The text a whole-value base64 string encodes, if it is printable UTF-8; else None."""
    # Encoders pad to a multiple of 4 (unpadded url-safe values too, when their length fits),
    # and base64 of text mixes cases: ids, digests and model names are ruled out cheaply.
    if len(value) % 4 or value.islower() or value.isupper() or not _B64_WHOLE.fullmatch(value):
        return None
    body = value.rstrip("=")
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
