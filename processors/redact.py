"""redact processor: finds secrets and PII in span, event, link and resource attributes
(prompts and completions included) and masks, hashes or drops them before any sink sees them.

How it works (batch-first, two passes):
1. Every string value of the batch (nested lists/dicts too, plus status messages) is
   collected, unless its attribute key is on `allow_keys`; keys on `deny_keys` are
   dropped/masked outright without scanning. Values shorter than 6 characters are skipped.
2. Prefilter: all values are joined into ONE buffer (NUL-separated) and scanned once
   by a Hyperscan database holding every rule (compiled with HS_FLAG_PREFILTER, a
   superset of each rule). Clean values cost no per-value Python at all. Without the
   `hyperscan` wheel the `python` engine runs each rule's `re` over the same buffer
   (correct, several times slower; see bench/processors_redact_sample.py).
3. Only the values a rule hit are checked precisely: the rule's Python regex plus its
   validator (Luhn, mod-97, JWT header, entropy). Overlaps resolve by rule priority.
4. Action per rule (`actions`, else `default_action`):
   - mask: the match (or the rule's secret group) becomes `[REDACTED:<type>:<hash6>]`,
   - hash: the whole value becomes `[HASHED:<type>:<hash16>]`,
   - drop: the attribute is removed (status messages are emptied).
   Hashes are HMAC-SHA256 keyed by `hash_key`, so equal secrets correlate across spans
   without being guessable from a dictionary of phone numbers.
Findings are counted in `tracepipe_redactions_total{processor,type}`; values are never logged.
Rules and their sources: processors/redact_rules.py.
"""

from __future__ import annotations

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
from pipeline.spans import Span, SpanBatch
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
    """One pass over a buffer of NUL-separated values -> (value index, rule index) candidates."""

    def __init__(self, rules: list[Rule], engine: str) -> None:
        self.rules = rules
        self.engine = "hyperscan" if engine in ("auto", "hyperscan") and _hs is not None else "python"
        self._db: Any = None
        if self.engine == "hyperscan":
            db = _hs.Database()
            # Rules without a hand-written prefilter compile their full pattern in PREFILTER mode
            # (look-arounds approximated into a superset); hand-written prefilters are plain.
            flags = [
                (0 if r.prefilter else _hs.HS_FLAG_PREFILTER) | (_hs.HS_FLAG_CASELESS if r.caseless else 0)
                for r in rules
            ]
            db.compile(
                expressions=[(r.prefilter or r.pattern).encode() for r in rules],
                ids=list(range(len(rules))),
                elements=len(rules),
                flags=flags,
            )
            self._db = db
        else:
            self._py = [
                re.compile((r.prefilter or r.pattern).encode(), re.IGNORECASE if r.caseless else 0) for r in rules
            ]

    def candidates(self, buffer: bytes, starts: list[int]) -> dict[tuple[int, int], list[int]]:
        """(value index, rule index) -> end offsets of prefilter matches, relative to the value."""
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
                ends.extend((rule, m.end()) for m in rx.finditer(buffer))
        for rule, end in ends:
            vi = bisect_right(starts, end - 1) - 1
            out.setdefault((vi, rule), []).append(end - starts[vi])
        return out


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


class _StatusSlot:
    """Lets a span's status message be rewritten like an attribute."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __setitem__(self, _key: str, value: str) -> None:
        self.span.status_message = value

    def pop(self, _key: str, _default: Any = None) -> None:
        self.span.status_message = ""


# A slot: where a string lives (container, key), and the top-level attribute it belongs to.
Slot = tuple[Any, Any, Any, str, str]
_KEY_SCAN, _KEY_ALLOW, _KEY_DENY = 0, 1, 2


class RedactProcessor(BaseProcessor):
    def __init__(self, component_id: str, config: RedactConfig, ctx: ComponentContext) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        selected = config.rules if config.rules is not None else [r.id for r in RULES]
        rules = [RULES_BY_ID[r] for r in selected if r not in set(config.disable_rules)]
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
        self._key_class: dict[str, int] = {}
        self._hash_key = config.hash_key.encode()
        telemetry = ctx.telemetry
        self._findings_counter: Callable[[str], Any] = lambda t: telemetry.redactions.labels(component_id, t)

    # --- keys ------------------------------------------------------------------------------

    def _classify(self, key: str) -> int:
        cls = self._key_class.get(key)
        if cls is None:
            low = key.lower()
            if self._deny is not None and self._deny.match(low):
                cls = _KEY_DENY
            elif self._allow is not None and self._allow.match(low):
                cls = _KEY_ALLOW
            else:
                cls = _KEY_SCAN
            if len(self._key_class) > 50_000:  # high-cardinality keys: keep the cache bounded
                self._key_class.clear()
            self._key_class[key] = cls
        return cls

    # --- hashing ---------------------------------------------------------------------------

    def _digest(self, text: str, n: int) -> str:
        return hmac.new(self._hash_key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:n]

    # --- collection ------------------------------------------------------------------------

    def _collect(self, batch: SpanBatch, counts: Counter[str]) -> list[Slot]:
        slots: list[Slot] = []
        seen_resources: set[int] = set()
        cfg = self.config
        for span in batch.spans:
            self._collect_attrs(span.attributes, slots, counts)
            if cfg.scan_events:
                for ev in span.events:
                    if ev.attributes:
                        self._collect_attrs(ev.attributes, slots, counts)
            for link in span.links:
                if link.attributes:
                    self._collect_attrs(link.attributes, slots, counts)
            if cfg.scan_resource:
                res = span.resource
                if id(res) not in seen_resources:
                    seen_resources.add(id(res))
                    self._collect_attrs(res.attributes, slots, counts)
            if cfg.scan_status_message and len(span.status_message) >= MIN_VALUE_LEN:
                holder = _StatusSlot(span)
                slots.append((holder, "status_message", holder, "status_message", span.status_message))
        return slots

    def _collect_attrs(self, attrs: dict[str, Any], slots: list[Slot], counts: Counter[str]) -> None:
        denied: list[str] | None = None
        for key, value in attrs.items():
            cls = self._key_class.get(key)
            if cls is None:
                cls = self._classify(key)
            if cls == _KEY_SCAN:
                if type(value) is str:
                    if len(value) >= MIN_VALUE_LEN:
                        slots.append((attrs, key, attrs, key, value))
                elif isinstance(value, list | dict):
                    self._collect_nested(value, attrs, key, slots)
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

    def _collect_nested(self, value: Any, top: dict[str, Any], top_key: str, slots: list[Slot]) -> None:
        items: Iterable[tuple[Any, Any]] = enumerate(value) if isinstance(value, list) else value.items()
        for k, v in items:
            if type(v) is str:
                if len(v) >= MIN_VALUE_LEN:
                    slots.append((value, k, top, top_key, v))
            elif isinstance(v, list | dict):
                self._collect_nested(v, top, top_key, slots)

    # --- detection -------------------------------------------------------------------------

    def _findings(self, text: str, rule_hits: Iterable[tuple[int, list[int] | None]]) -> list[tuple[int, int, int]]:
        """(start, end, rule index) of validated, non-overlapping findings in `text`.

        `rule_hits` pairs a rule with the prefilter's match ends in `text` (character offsets),
        or None to search the whole text. Around each end only a window is searched; a match
        touching a window edge might be cut by it, so that rule is searched in full instead."""
        found: list[tuple[int, int, int]] = []
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
                    found.append((start, end, ri))
        if len(found) <= 1:
            return found
        found = list(dict.fromkeys(found))
        # Highest priority first, then longest; keep those not overlapping a kept one.
        found.sort(key=lambda f: (-self.rules[f[2]].priority, -(f[1] - f[0]), f[0]))
        kept: list[tuple[int, int, int]] = []
        for f in found:
            if all(f[1] <= k[0] or f[0] >= k[1] for k in kept):
                kept.append(f)
        kept.sort()
        return kept

    def scan_text(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, type) of every finding in one string: for tests and tools."""
        hits = [(ri, None) for ri in range(len(self.rules))]
        return [(s, e, self.rules[ri].id) for s, e, ri in self._findings(text, hits)]

    # --- the hot path ----------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not batch.spans:
            return batch
        counts: Counter[str] = Counter()
        slots = self._collect(batch, counts)
        if slots:
            encoded = [s[4].encode("utf-8", "surrogatepass") for s in slots]
            starts: list[int] = []
            pos = 0
            for b in encoded:
                starts.append(pos)
                pos += len(b) + 1
            buffer = SEPARATOR.join(encoded)
            hits: dict[int, list[tuple[int, list[int] | None]]] = {}
            for (vi, ri), ends in self.prefilter.candidates(buffer, starts).items():
                # Byte offsets are character offsets only in ASCII values; others are searched whole.
                ascii_only = len(encoded[vi]) == len(slots[vi][4])
                hits.setdefault(vi, []).append((ri, ends if ascii_only else None))
            dropped: set[tuple[int, str]] = set()
            for vi, rule_hits in hits.items():
                _container, _ckey, top, top_key, text = slots[vi]
                if (id(top), top_key) in dropped:
                    continue
                findings = self._findings(text, rule_hits)
                if findings:
                    self._apply(slots[vi], findings, counts, dropped)
        if counts:
            for kind, n in counts.items():
                self._findings_counter(kind).inc(n)
        return batch

    def _apply(
        self, slot: Slot, findings: list[tuple[int, int, int]], counts: Counter[str], dropped: set[tuple[int, str]]
    ) -> None:
        container, ckey, top, top_key, text = slot
        action = "mask"
        for _s, _e, ri in findings:
            counts[self.rules[ri].id] += 1
            if _ACTION_RANK[self.actions[ri]] > _ACTION_RANK[action]:
                action = self.actions[ri]
        if action == "drop":
            top.pop(top_key, None)
            dropped.add((id(top), top_key))
            return
        if action == "hash":
            kind = self.rules[max(findings, key=lambda f: self.rules[f[2]].priority)[2]].id
            container[ckey] = f"[HASHED:{kind}:{self._digest(text, 16)}]"
            return
        parts: list[str] = []
        last = 0
        for start, end, ri in findings:
            parts.append(text[last:start])
            parts.append(f"[REDACTED:{self.rules[ri].id}:{self._digest(text[start:end], 6)}]")
            last = end
        parts.append(text[last:])
        container[ckey] = "".join(parts)

    # --- plain values (log record bodies and attributes) -------------------------------------
    # PROVISIONAL (branch attribution-signals): a minimal `redact_values` so the logs store can
    # call the API the security-redact branch adds. At merge, replace this method with theirs
    # (same signature); pipeline/logs_store.py only calls `redact_values`.

    def redact_values(self, values: list[Any]) -> list[Any]:
        """`values` (str, bytes, numbers, lists, dicts, nested) redacted with this processor's
        rules and actions, same shapes; a dict's keys on `deny_keys` are handled as for span
        attributes. A top-level value (or list item) whose action is `drop` becomes None, a
        dict entry is removed. Top-level bytes are scanned as UTF-8 and returned as bytes;
        bytes nested in lists/dicts are not scanned. The input is not modified."""
        import copy

        top: dict[int, Any] = dict(enumerate(copy.deepcopy(values)))
        counts: Counter[str] = Counter()
        slots: list[Slot] = []
        was_bytes: set[int] = set()
        for i, value in list(top.items()):
            if isinstance(value, bytes | bytearray):  # scanned as UTF-8 text, returned as bytes
                was_bytes.add(i)
                value = top[i] = bytes(value).decode("utf-8", "surrogateescape")
            if type(value) is str:
                if len(value) >= MIN_VALUE_LEN:
                    slots.append((top, i, top, i, value))
            elif isinstance(value, dict):
                self._collect_attrs(value, slots, counts)
            elif isinstance(value, list):
                self._collect_nested(value, top, i, slots)
        if slots:
            encoded = [s[4].encode("utf-8", "surrogatepass") for s in slots]
            starts: list[int] = []
            pos = 0
            for b in encoded:
                starts.append(pos)
                pos += len(b) + 1
            hits: dict[int, list[tuple[int, list[int] | None]]] = {}
            for (vi, ri), ends in self.prefilter.candidates(SEPARATOR.join(encoded), starts).items():
                ascii_only = len(encoded[vi]) == len(slots[vi][4])
                hits.setdefault(vi, []).append((ri, ends if ascii_only else None))
            dropped: set[tuple[int, str]] = set()
            for vi, rule_hits in hits.items():
                _container, _ckey, owner, owner_key, text = slots[vi]
                if (id(owner), owner_key) in dropped:
                    continue
                findings = self._findings(text, rule_hits)
                if findings:
                    self._apply(slots[vi], findings, counts, dropped)
        if counts:
            for kind, n in counts.items():
                self._findings_counter(kind).inc(n)
        for i in was_bytes:
            if isinstance(top.get(i), str):
                top[i] = top[i].encode("utf-8", "surrogateescape")
        return [top.get(i) for i in range(len(values))]


factory = Factory(
    "redact", RedactConfig, RedactProcessor, "Masks, hashes or drops secrets and PII in attributes before any sink."
)
