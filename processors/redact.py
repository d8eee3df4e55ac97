"""redact processor: finds secrets and PII wherever a span carries text and masks, hashes or
drops them before any sink sees them.

Where: attribute values of spans, events, links and resources (strings, nested lists/dicts,
bytes: decoded as UTF-8 when valid, else Latin-1, written back as bytes), attribute KEYS at
every level, span names, event names, the scope name and version, the span's and links'
trace_state, status messages. Run it first in the chain, so that no processor copies a value
elsewhere before it is redacted (the shipped configs do).

How it works (batch-first, two passes):
1. Every string value of the batch (nested lists/dicts too, plus status messages and bytes
   decoded) is collected, unless its attribute key is on `allow_keys`; keys on `deny_keys`
   are dropped/masked outright without scanning. Values shorter than 6 characters are skipped.
   Keys, names, scope and trace_state repeat across spans: each distinct one is scanned once
   (its own small prefilter pass) and the result cached.
2. Prefilter: all values are joined into ONE buffer (NUL-separated, NUL-framed) and scanned
   once by a Hyperscan database holding every rule (compiled with HS_FLAG_PREFILTER, a
   superset of each rule), one pattern per disguise (processors/redact_disguise.py: format
   characters, JSON \\u escapes, percent-encoding, HTML entities) and a whole-value base64
   pattern. Clean values cost no per-value Python at all. Without the `hyperscan` wheel the
   `python` engine runs each pattern's `re` over the same buffer (correct, several times
   slower; see bench/processors_redact_sample.py).
3. Only the values a pattern hit are checked precisely: the rule's Python regex plus its
   validator (Luhn and card grouping, mod-97, JWT header, entropy); a card rejected as a
   whole is looked for inside the digit run (`Rule.parts`). A disguise hit builds a
   normalised view of the value, scanned again (prefilter included, two rounds at most);
   each view character maps back to the original range it came from, which is masked. A
   base64 hit decodes the value; a finding in the decoded text masks the whole value.
   Overlaps resolve by rule priority.
4. Action per rule (`actions`, else `default_action`):
   - mask: the match (or the rule's secret group) becomes `[REDACTED:<type>:<hash6>]`,
   - hash: the whole value becomes `[HASHED:<type>:<hash16>]`,
   - drop: the attribute is removed (a key: its attribute; status messages, names, scope and
     trace_state are emptied).
   Hashes are HMAC-SHA256 keyed by `hash_key` over the secret as detected (disguised or
   not), so equal secrets correlate across spans without being guessable from a dictionary.
Findings are counted in `tracepipe_redactions_total{processor,type}`; values are never logged.
`redact_values` / `redact_attributes` apply the same to plain values (OTLP log records).
Rules and their sources: processors/redact_rules.py.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import hmac
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.spans import SpanBatch
from processors.redact_disguise import B64_PREFILTER, MAX_ROUNDS, b64_text, strip_format_chars, unveil
from processors.redact_disguise import PREFILTERS as DISGUISE_PREFILTERS
from processors.redact_rules import RULES, RULES_BY_ID, Rule

try:  # the fast multi-pattern engine (x86_64 wheels on PyPI)
    import hyperscan as _hs
except ImportError:  # pragma: no cover - depends on the platform
    _hs = None

Action = Literal["mask", "hash", "drop"]
_ACTION_RANK = {"mask": 0, "hash": 1, "drop": 2}
MIN_VALUE_LEN = 6
SEPARATOR = b"\x00"

DEFAULT_DENY_KEYS = [
    "http.request.header.authorization",
    "http.request.header.proxy-authorization",
    "http.request.header.cookie",
    "http.request.header.x-api-key",
    "http.request.header.api-key",
    "http.response.header.set-cookie",
]


class CustomRule(ComponentConfig):
    id: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$", description="Type name used in markers and metrics.")
    regex: str = Field(..., description="Python/PCRE regular expression (no backreferences).")
    group: int = Field(0, ge=0, description="Capture group holding the secret; 0 = the whole match.")
    caseless: bool = False
    category: Literal["secret", "pii"] = "secret"

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from e
        if rx.match(""):
            raise ValueError("the regular expression matches the empty string")
        if _hs is not None:
            try:
                _hs.Database().compile(expressions=[v.encode()], ids=[0], elements=1, flags=[_hs.HS_FLAG_PREFILTER])
            except _hs.error as e:
                raise ValueError(f"hyperscan cannot compile this expression: {e}") from e
        return v


class RedactConfig(ComponentConfig):
    rules: list[str] | None = Field(
        None, description="Rule ids to run (default: all built-in rules). See processors/redact_rules.py."
    )
    categories: list[Literal["secret", "pii"]] | None = Field(
        None, description="Run only the built-in rules of these categories (default: both; shipped configs: secret)."
    )
    disable_rules: list[str] = Field(default_factory=list, description="Built-in rule ids to skip.")
    custom_rules: list[CustomRule] = Field(default_factory=list, description="Extra rules of your own.")
    default_action: Action = Field("mask", description="Action for rules without an entry in `actions`.")
    actions: dict[str, Action] = Field(
        default_factory=dict, description="Action per rule id or per category (`secret`, `pii`)."
    )
    deny_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENY_KEYS),
        description="Attribute keys (globs, case-insensitive) always removed or masked, never scanned.",
    )
    deny_action: Action = Field("drop", description="What happens to a denied key: drop, or mask/hash its value.")
    allow_keys: list[str] = Field(
        default_factory=list, description="Attribute keys (globs) never scanned (trusted, e.g. model names)."
    )
    scan_resource: bool = Field(True, description="Scan resource attributes.")
    scan_events: bool = Field(True, description="Scan event attributes (exceptions, prompt events).")
    scan_status_message: bool = Field(True, description="Scan span status messages.")
    hash_key: str = Field("tracepipe", description="HMAC key of marker hashes; set a private one in production.")
    engine: Literal["auto", "hyperscan", "python"] = Field(
        "auto", description="Prefilter engine: hyperscan (fast), python (re per rule over the batch buffer)."
    )

    @model_validator(mode="after")
    def _known_rules(self) -> RedactConfig:
        known = set(RULES_BY_ID) | {c.id for c in self.custom_rules}
        for name in [*(self.rules or []), *self.disable_rules]:
            if name not in RULES_BY_ID:
                raise ValueError(f"unknown rule {name!r} (known: {', '.join(sorted(RULES_BY_ID))})")
        for name in self.actions:
            if name not in known and name not in ("secret", "pii"):
                raise ValueError(f"actions: unknown rule or category {name!r}")
        if self.engine == "hyperscan" and _hs is None:
            raise ValueError("engine: hyperscan is not installed (pip install hyperscan) — use auto or python")
        return self


# --- the engine ----------------------------------------------------------------------------


class Prefilter:
    """One pass over a buffer of NUL-separated values -> (value index, pattern index) candidates.

    Patterns 0..len(rules)-1 are the rules; then one per disguise of processors/redact_disguise.py
    (`disguise_ids`), then the whole-value base64 pattern (`b64_id`). The buffer starts and ends
    with a NUL so a whole value sits between two."""

    def __init__(self, rules: list[Rule], engine: str) -> None:
        self.rules = rules
        self.engine = "hyperscan" if engine in ("auto", "hyperscan") and _hs is not None else "python"
        n = len(rules)
        self.disguise_ids = range(n, n + len(DISGUISE_PREFILTERS))
        self.b64_id = n + len(DISGUISE_PREFILTERS)
        extra = [p for _name, p in DISGUISE_PREFILTERS] + [B64_PREFILTER]
        self._db: Any = None
        if self.engine == "hyperscan":
            db = _hs.Database()
            # Rules without a hand-written prefilter compile their full pattern in PREFILTER mode
            # (look-arounds approximated into a superset); hand-written prefilters are plain.
            flags = [
                (0 if r.prefilter else _hs.HS_FLAG_PREFILTER) | (_hs.HS_FLAG_CASELESS if r.caseless else 0)
                for r in rules
            ] + [0] * (len(DISGUISE_PREFILTERS) + 1)
            expressions = [(r.prefilter or r.pattern).encode() for r in rules] + [p.encode() for p in extra]
            db.compile(
                expressions=expressions,
                ids=list(range(len(expressions))),
                elements=len(expressions),
                flags=flags,
            )
            self._db = db
        else:
            self._py = [
                re.compile((r.prefilter or r.pattern).encode(), re.IGNORECASE if r.caseless else 0) for r in rules
            ] + [re.compile(p.encode()) for p in extra]

    def candidates(self, buffer: bytes, starts: list[int]) -> dict[tuple[int, int], list[int]]:
        """(value index, pattern index) -> end offsets of prefilter matches, relative to the value."""
        out: dict[tuple[int, int], list[int]] = {}
        if not buffer:
            return out
        ends: list[tuple[int, int]] = []
        if self._db is not None:
            add = ends.append

            def on_match(rule: int, _start: int, end: int, _flags: int, _ctx: Any) -> None:
                add((rule, end))

            self._db.scan(buffer, match_event_handler=on_match)
        else:
            for rule, rx in enumerate(self._py):
                if rule == self.b64_id:  # look-arounds: a value's trailing NUL is the next one's leading
                    ends.extend((rule, m.end() + 1) for m in _B64_PY.finditer(buffer))
                else:
                    ends.extend((rule, m.end()) for m in rx.finditer(buffer))
        b64 = self.b64_id
        for rule, end in ends:
            # A base64 match ends after the value's trailing NUL: look one byte further back.
            vi = bisect_right(starts, end - (2 if rule == b64 else 1)) - 1
            if vi < 0 or vi >= len(starts):
                continue
            out.setdefault((vi, rule), []).append(end - starts[vi])
        return out

    def scan_values(self, encoded: list[bytes]) -> tuple[list[int], dict[tuple[int, int], list[int]]]:
        """Join `encoded` into one NUL-framed buffer and scan it: (value starts, candidates)."""
        starts: list[int] = []
        pos = 1
        for b in encoded:
            starts.append(pos)
            pos += len(b) + 1
        buffer = SEPARATOR + SEPARATOR.join(encoded) + SEPARATOR
        return starts, self.candidates(buffer, starts)


DISGUISE_KINDS = [name for name, _p in DISGUISE_PREFILTERS]
_B64_PY = re.compile(rb"(?<=\x00)(?=[A-Za-z0-9+/_-]*[A-Z])(?=[A-Za-z0-9+/_-]*[a-z])[A-Za-z0-9+/_-]{12,}={0,2}(?=\x00)")
_PREFILTERS: dict[tuple[Any, ...], Prefilter] = {}


def _prefilter_for(rules: list[Rule], engine: str) -> Prefilter:
    key = (engine, tuple((r.id, r.prefilter or r.pattern, r.caseless) for r in rules))
    pf = _PREFILTERS.get(key)
    if pf is None:  # compiling a Hyperscan database takes ~0.5 s: once per process per rule set
        pf = _PREFILTERS[key] = Prefilter(rules, engine)
    return pf


def _globs_regex(globs: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(g.lower()) for g in globs]
    return re.compile("|".join(parts)) if parts else None


WINDOW = 200  # characters searched on each side of a prefilter hit (edge hits fall back to the whole value)


def _windows(ends: list[int], n: int) -> list[tuple[int, int]]:
    """Merged [end - WINDOW, end + WINDOW) ranges inside [0, n)."""
    if n <= 4 * WINDOW or len(ends) > 16:
        return [(0, n)]
    out: list[tuple[int, int]] = []
    for e in sorted(ends):
        a, b = max(0, e - WINDOW), min(n, e + WINDOW)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class _FieldSlot:
    """Lets a string field of a span (status message) be rewritten like an attribute."""

    __slots__ = ("field", "obj")

    def __init__(self, obj: Any, field: str) -> None:
        self.obj = obj
        self.field = field

    def __setitem__(self, _key: str, value: str) -> None:
        setattr(self.obj, self.field, value)

    def pop(self, _key: str, _default: Any = None) -> None:
        setattr(self.obj, self.field, "")


class _BytesSlot:
    """A bytes value scanned as text (UTF-8 when valid, else one character per byte)."""

    __slots__ = ("container", "encoding", "key")

    def __init__(self, container: Any, key: Any, encoding: str) -> None:
        self.container = container
        self.key = key
        self.encoding = encoding

    def __setitem__(self, _key: Any, value: str) -> None:
        errors = "surrogatepass" if self.encoding == "utf-8" else "strict"
        self.container[self.key] = value.encode(self.encoding, errors)


def _bytes_text(value: bytes | bytearray) -> tuple[str, str]:
    try:
        return bytes(value).decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return bytes(value).decode("latin-1"), "latin-1"


# A slot: where a string lives (container, key), and the top-level attribute it belongs to.
Slot = tuple[Any, Any, Any, Any, str]
# A finding: [start, end) in the value, the rule index, and the secret as detected (hashed in markers).
Finding = tuple[int, int, int, str]
_KEY_SCAN, _KEY_ALLOW, _KEY_DENY = 0, 1, 2
_CACHE_LIMIT = 50_000
# The result of redacting a short field (name, key, scope, trace_state): None when clean,
# else (new text or None to drop, rule ids found).
ShortResult = tuple[str | None, tuple[str, ...]] | None
# Keys to rename (container, old key, new key or None to drop), applied after the values.
Renames = list[tuple[Any, Any, str | None]]


class RedactProcessor(BaseProcessor):
    """See the module docstring. Besides `process` (span batches), `redact_values` and
    `redact_attributes` redact plain Python values, e.g. the body and attributes of OTLP log
    records, with the same rules, actions and disguise handling."""

    def __init__(self, component_id: str, config: RedactConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        selected = config.rules if config.rules is not None else [r.id for r in RULES]
        cats = set(config.categories) if config.categories is not None else {"secret", "pii"}
        rules = [RULES_BY_ID[r] for r in selected if r not in set(config.disable_rules)]
        rules = [r for r in rules if r.category in cats]
        rules += [
            Rule(
                c.id,
                c.category,
                c.regex,
                caseless=c.caseless,
                group=c.group,
                priority=60,
                source="custom",
                unbounded=True,
            )
            for c in config.custom_rules
        ]
        self.rules = rules
        self.prefilter = _prefilter_for(rules, config.engine)
        self.actions = [
            config.actions.get(r.id) or config.actions.get(r.category) or config.default_action for r in rules
        ]
        self._allow = _globs_regex(config.allow_keys)
        self._deny = _globs_regex(config.deny_keys)
        self._key_class: dict[str, tuple[int, ShortResult]] = {}
        self._short: dict[str, ShortResult] = {}
        self._hash_key = config.hash_key.encode()
        telemetry = ctx.telemetry
        self._findings_counter: Callable[[str], Any] = lambda t: telemetry.redactions.labels(component_id, t)

    # --- keys ------------------------------------------------------------------------------

    def _classify(self, key: str) -> tuple[int, ShortResult]:
        """(allow/deny/scan class, redacted form of the key or None when clean), cached per key."""
        info = self._key_class.get(key)
        if info is None:
            low = strip_format_chars(key).lower()  # an invisible character does not dodge deny_keys
            if self._deny is not None and self._deny.match(low):
                cls = _KEY_DENY
            elif self._allow is not None and self._allow.match(low):
                cls = _KEY_ALLOW
            else:
                cls = _KEY_SCAN
            result = self._short_result(key) if len(key) >= MIN_VALUE_LEN else None
            if len(self._key_class) > _CACHE_LIMIT:  # high-cardinality keys: keep the cache bounded
                self._key_class.clear()
            info = self._key_class[key] = (cls, result)
        return info

    # --- hashing ---------------------------------------------------------------------------

    def _digest(self, text: str, n: int) -> str:
        return hmac.new(self._hash_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:n]

    # --- collection ------------------------------------------------------------------------

    def _collect(self, batch: SpanBatch, counts: Counter[str], renames: Renames) -> list[Slot]:
        slots: list[Slot] = []
        seen_resources: set[int] = set()
        cfg = self.config
        short = self._redact_short
        known = self._short
        for span in batch.spans:
            self._collect_attrs(span.attributes, slots, counts, renames)
            # Names and scopes repeat: a cached clean one costs one dict lookup (None = clean).
            if known.get(span.name, _MISSING) is not None:
                new = short(span.name, counts)
                if new is not None:
                    span.name = new
            if known.get(span.scope_name, _MISSING) is not None:
                new = short(span.scope_name, counts)
                if new is not None:
                    span.scope_name = new
            if known.get(span.scope_version, _MISSING) is not None:
                new = short(span.scope_version, counts)
                if new is not None:
                    span.scope_version = new
            if span.trace_state:
                new = short(span.trace_state, counts)
                if new is not None:
                    span.trace_state = new
            if cfg.scan_events:
                for ev in span.events:
                    new = short(ev.name, counts)
                    if new is not None:
                        ev.name = new
                    if ev.attributes:
                        self._collect_attrs(ev.attributes, slots, counts, renames)
            for link in span.links:
                if link.trace_state:
                    new = short(link.trace_state, counts)
                    if new is not None:
                        link.trace_state = new
                if link.attributes:
                    self._collect_attrs(link.attributes, slots, counts, renames)
            if cfg.scan_resource:
                res = span.resource
                if id(res) not in seen_resources:
                    seen_resources.add(id(res))
                    self._collect_attrs(res.attributes, slots, counts, renames)
            if cfg.scan_status_message and len(span.status_message) >= MIN_VALUE_LEN:
                holder = _FieldSlot(span, "status_message")
                slots.append((holder, "status_message", holder, "status_message", span.status_message))
        return slots

    def _collect_attrs(
        self,
        attrs: dict[str, Any],
        slots: list[Slot],
        counts: Counter[str],
        renames: Renames,
    ) -> None:
        denied: list[str] | None = None
        key_class = self._key_class
        for key, value in attrs.items():
            info = key_class.get(key)
            if info is None:
                info = self._classify(key)
            cls, result = info
            if result is not None:
                for kind in result[1]:
                    counts[kind] += 1
                renames.append((attrs, key, result[0]))
            if cls == _KEY_SCAN:
                tv = type(value)
                if tv is str:
                    if len(value) >= MIN_VALUE_LEN:
                        slots.append((attrs, key, attrs, key, value))
                elif tv is list or tv is dict:
                    self._collect_nested(value, attrs, key, slots, counts, renames)
                elif (tv is bytes or tv is bytearray) and len(value) >= MIN_VALUE_LEN:
                    text, enc = _bytes_text(value)
                    slots.append((_BytesSlot(attrs, key, enc), key, attrs, key, text))
            elif cls == _KEY_DENY:
                if denied is None:
                    denied = []
                denied.append(key)
        if denied:
            for key in denied:
                counts["denied_key"] += 1
                action = self.config.deny_action
                if action == "drop":
                    del attrs[key]
                else:
                    raw = str(attrs[key])
                    tag = "REDACTED" if action == "mask" else "HASHED"
                    attrs[key] = f"[{tag}:denied_key:{self._digest(raw, 6 if action == 'mask' else 16)}]"

    def _collect_nested(
        self,
        value: Any,
        top: dict[str, Any],
        top_key: str,
        slots: list[Slot],
        counts: Counter[str],
        renames: Renames,
    ) -> None:
        is_dict = isinstance(value, dict)
        items: Iterable[tuple[Any, Any]] = value.items() if is_dict else enumerate(value)
        for k, v in items:
            if is_dict and type(k) is str and len(k) >= MIN_VALUE_LEN:
                result = self._short.get(k, _MISSING)
                if result is _MISSING:
                    result = self._short_result(k)
                if result is not None:
                    for kind in result[1]:
                        counts[kind] += 1
                    renames.append((value, k, result[0]))
            tv = type(v)
            if tv is str:
                if len(v) >= MIN_VALUE_LEN:
                    slots.append((value, k, top, top_key, v))
            elif tv is list or tv is dict:
                self._collect_nested(v, top, top_key, slots, counts, renames)
            elif (tv is bytes or tv is bytearray) and len(v) >= MIN_VALUE_LEN:
                text, enc = _bytes_text(v)
                slots.append((_BytesSlot(value, k, enc), k, top, top_key, text))

    # --- short fields: names, keys, scope, trace_state (few distinct values, cached) --------

    def _short_result(self, text: str) -> ShortResult:
        findings = self._detect(text)
        if not findings:
            result: ShortResult = None
        else:
            kinds = tuple(self.rules[f[2]].id for f in findings)
            new = self._rewrite(text, findings)
            result = (new, kinds)
        if len(self._short) > _CACHE_LIMIT:
            self._short.clear()
        self._short[text] = result
        return result

    def _redact_short(self, text: str, counts: Counter[str]) -> str | None:
        """The redacted form of a short field, or None when it is clean (dropped fields become "")."""
        if len(text) < MIN_VALUE_LEN:
            self._short[text] = None  # so the callers' cache lookup says "clean" next time
            return None
        result = self._short.get(text, _MISSING)
        if result is _MISSING:
            result = self._short_result(text)
        if result is None:
            return None
        for kind in result[1]:
            counts[kind] += 1
        return result[0] if result[0] is not None else ""

    # --- detection -------------------------------------------------------------------------

    def _findings(self, text: str, rule_hits: Iterable[tuple[int, list[int] | None]]) -> list[Finding]:
        """(start, end, rule index, secret) of validated, non-overlapping findings in `text`.

        `rule_hits` pairs a rule with the prefilter's match ends in `text` (character offsets),
        or None to search the whole text. Around each end only a window is searched; a match
        touching a window edge might be cut by it, so that rule is searched in full instead."""
        found: list[Finding] = []
        n = len(text)
        for ri, ends in rule_hits:
            rule = self.rules[ri]
            windows = _windows(ends, n) if ends is not None and not rule.unbounded else [(0, n)]
            matches: list[tuple[int, int, str]] = []
            for a, b in windows:
                sub = text if (a, b) == (0, n) else text[a:b]
                edge = False
                for m in rule.regex.finditer(sub):
                    if (a > 0 and m.start() == 0) or (b < n and m.end() == len(sub)):
                        edge = True
                        break
                    g = rule.group
                    start, end = m.span(g)
                    if start >= 0 and start != end:
                        matches.append((a + start, a + end, m.group(g)))
                if edge:
                    matches = []
                    for m in rule.regex.finditer(text):
                        start, end = m.span(rule.group)
                        if start >= 0 and start != end:
                            matches.append((start, end, m.group(rule.group)))
                    break
            for start, end, secret in matches:
                if rule.validator is None or rule.validator(secret):
                    found.append((start, end, ri, secret))
                elif rule.parts is not None:
                    for pa, pb in rule.parts(secret):
                        found.append((start + pa, start + pb, ri, secret[pa:pb]))
        return self._resolve(found)

    def _resolve(self, found: list[Finding]) -> list[Finding]:
        if len(found) <= 1:
            return found
        found = list(dict.fromkeys(found))
        # Highest priority first, then longest; keep those not overlapping a kept one.
        found.sort(key=lambda f: (-self.rules[f[2]].priority, -(f[1] - f[0]), f[0]))
        kept: list[Finding] = []
        for f in found:
            if all(f[1] <= k[0] or f[0] >= k[1] for k in kept):
                kept.append(f)
        kept.sort()
        return kept

    def _value_findings(
        self, text: str, hits: list[tuple[int, list[int]]], ascii_only: bool, depth: int = 0
    ) -> list[Finding]:
        """Findings in one value from its prefilter hits: the rules on the text itself, then on its
        normalised view when a disguise pattern hit (mapped back onto the original), then on the
        decoded text of a whole-value base64 string (a finding there masks the whole value)."""
        nr = len(self.rules)
        rule_hits = [(pid, ends if ascii_only else None) for pid, ends in hits if pid < nr]
        found = self._findings(text, rule_hits) if rule_hits else []
        kinds = [DISGUISE_KINDS[pid - nr] for pid, _e in hits if pid in self.prefilter.disguise_ids]
        if depth < MAX_ROUNDS and kinds:  # the view's own disguises: found by its prefilter pass below
            view = unveil(text, kinds, rounds=1)
            if view is not None:
                extra = [(*view.span(s, e), ri, sec) for s, e, ri, sec in self._detect(view.text, depth + 1)]
                if extra:
                    found = self._resolve(found + extra)
        if depth == 0 and not found and any(pid == self.prefilter.b64_id for pid, _e in hits):
            decoded = b64_text(text)
            if decoded is not None:
                inner = self._detect(decoded, depth + 1)
                if inner:
                    top = max(inner, key=lambda f: self.rules[f[2]].priority)
                    found = [(0, len(text), top[2], decoded)]
        return found

    def _detect(self, text: str, depth: int = 0) -> list[Finding]:
        """Findings in one string, prefilter included (short fields, views, decoded base64)."""
        encoded = text.encode("utf-8", "surrogatepass")
        _starts, cands = self.prefilter.scan_values([encoded])
        if not cands:
            return []
        hits = [(pid, ends) for (_vi, pid), ends in cands.items()]
        return self._value_findings(text, hits, len(encoded) == len(text), depth)

    def scan_text(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, type) of every finding in one string: for tests and tools."""
        return [(s, e, self.rules[ri].id) for s, e, ri, _sec in self._detect(text)]

    # --- the hot path ----------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not batch.spans:
            return batch
        counts: Counter[str] = Counter()
        renames: Renames = []
        slots = self._collect(batch, counts, renames)
        self._redact_slots(slots, counts)
        self._apply_renames(renames)
        self._count(counts)
        return batch

    def _count(self, counts: Counter[str]) -> None:
        for kind, n in counts.items():
            self._findings_counter(kind).inc(n)

    def _redact_slots(self, slots: list[Slot], counts: Counter[str]) -> None:
        if not slots:
            return
        encoded = [s[4].encode("utf-8", "surrogatepass") for s in slots]
        _starts, cands = self.prefilter.scan_values(encoded)
        hits: dict[int, list[tuple[int, list[int]]]] = {}
        for (vi, pid), ends in cands.items():
            hits.setdefault(vi, []).append((pid, ends))
        dropped: set[tuple[int, Any]] = set()
        for vi, value_hits in hits.items():
            _container, _ckey, top, top_key, text = slots[vi]
            if (id(top), top_key) in dropped:
                continue
            # Byte offsets are character offsets only in ASCII values; others are searched whole.
            findings = self._value_findings(text, value_hits, len(encoded[vi]) == len(text))
            if findings:
                self._apply(slots[vi], findings, counts, dropped)

    @staticmethod
    def _apply_renames(renames: Renames) -> None:
        """Keys holding a secret: renamed to their masked form (or dropped), after the values."""
        for container, key, new in renames:
            if key not in container:
                continue
            value = container.pop(key)
            if new is not None:
                container[new] = value

    def _action(self, findings: list[Finding]) -> str:
        action = "mask"
        for f in findings:
            if _ACTION_RANK[self.actions[f[2]]] > _ACTION_RANK[action]:
                action = self.actions[f[2]]
        return action

    def _rewrite(self, text: str, findings: list[Finding]) -> str | None:
        """`text` with its findings masked, or wholly hashed; None for drop."""
        action = self._action(findings)
        if action == "drop":
            return None
        if action == "hash":
            kind = self.rules[max(findings, key=lambda f: self.rules[f[2]].priority)[2]].id
            return f"[HASHED:{kind}:{self._digest(text, 16)}]"
        parts: list[str] = []
        last = 0
        for start, end, ri, secret in findings:
            parts.append(text[last:start])
            parts.append(f"[REDACTED:{self.rules[ri].id}:{self._digest(secret, 6)}]")
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def _apply(self, slot: Slot, findings: list[Finding], counts: Counter[str], dropped: set[tuple[int, Any]]) -> None:
        container, ckey, top, top_key, text = slot
        for f in findings:
            counts[self.rules[f[2]].id] += 1
        new = self._rewrite(text, findings)
        if new is None:
            top.pop(top_key, None)
            dropped.add((id(top), top_key))
            return
        container[ckey] = new

    # --- plain values (OTLP log records and other callers) ---------------------------------

    def redact_values(self, values: list[Any]) -> list[Any]:
        """Redact plain Python values (str, bytes, numbers, bools, None, nested lists/dicts), e.g. the
        bodies of OTLP log records: returns a NEW list of the same length, the inputs untouched.

        Strings and bytes are scanned like span attribute values (same rules, actions, disguise
        handling; bytes stay bytes); dict keys inside values are scanned like attribute keys. A
        value whose finding's action is `drop` becomes None. Findings are counted in
        tracepipe_redactions_total like the spans'. One call scans all values in one batch pass."""
        holder: dict[Any, Any] = dict(enumerate(copy.deepcopy(list(values))))
        counts: Counter[str] = Counter()
        renames: Renames = []
        slots: list[Slot] = []
        for i, v in list(holder.items()):
            if type(v) is str:
                if len(v) >= MIN_VALUE_LEN:
                    slots.append((holder, i, holder, i, v))
            elif isinstance(v, list | dict):
                self._collect_nested(v, holder, i, slots, counts, renames)  # type: ignore[arg-type]
            elif isinstance(v, bytes | bytearray) and len(v) >= MIN_VALUE_LEN:
                text, enc = _bytes_text(v)
                slots.append((_BytesSlot(holder, i, enc), i, holder, i, text))
        self._redact_slots(slots, counts)
        self._apply_renames(renames)
        self._count(counts)
        return [holder.get(i) for i in range(len(values))]

    def redact_attributes(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """Redact one attribute map (e.g. an OTLP log record's attributes) exactly as a span's:
        keys scanned, deny_keys/allow_keys applied, values scanned. Returns a NEW dict."""
        attrs = copy.deepcopy(dict(attributes))
        counts: Counter[str] = Counter()
        renames: Renames = []
        slots: list[Slot] = []
        self._collect_attrs(attrs, slots, counts, renames)
        self._redact_slots(slots, counts)
        self._apply_renames(renames)
        self._count(counts)
        return attrs

    def redact_text(self, text: str) -> str:
        """One string redacted (a dropped one becomes ""); for log lines and metric labels."""
        if len(text) < MIN_VALUE_LEN:
            return text
        findings = self._detect(text)
        if not findings:
            return text
        new = self._rewrite(text, findings)
        return new if new is not None else ""


_MISSING: Any = object()


factory = Factory(
    "redact", RedactConfig, RedactProcessor, "Masks, hashes or drops secrets and PII in attributes before any sink."
)
