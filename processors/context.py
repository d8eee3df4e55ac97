"""context processor: who and what a span is accounted to, inherited from its ancestors.

Applications usually set the accounting attributes (`user.id`, `tenant.id`, `customer.id`,
`session.id` / `gen_ai.conversation.id`, `app.feature`, `user.tier`, plus `keys` from the
YAML) once, on the root span of a request; the LLM client spans below it carry only model
and tokens. This processor copies those attributes down the span tree so that budgets,
Prometheus metrics, anomaly keys and the stored typed columns (UserId, SessionId, Feature,
TenantId, ...) all see them on every span.

The rule: a span's own value wins (a span attribute, or the same key on its resource);
otherwise it takes the value of its NEAREST ancestor that has one (the parent's effective
value, recursively). Values are copied into the span's attributes.

Root spans end, and so arrive, after their children. Spans of a trace whose root has not
arrived are held, per trace, until the root arrives (released at once, in the same
batch) or `decision_wait` seconds after the trace's first span arrived (an injectable
monotonic clock, time.monotonic by default), whichever comes first. A trace released
without its root is resolved with what arrived; its spans are counted in
tracepipe_context_spans_without_root_total. Memory is bounded by `max_traces` and
`max_spans`: when full, the oldest traces are released first
(tracepipe_context_early_releases_total). Traces whose root went through are remembered
(bounded LRU, `remember_traces`) with the context of their spans, so a span arriving after
its root (an async child outliving the request) is resolved at once from its ancestors'
remembered context (its parent's, else the root's).

Batch ids: released spans travel in the batch being processed. When every span passed on
came from that batch its id is kept; otherwise the output is named by its sources and
content (`ctx-<sha256 prefix>`, pipeline/batch_ids.py), so a redelivery that releases the
same spans gets the same id and sinks deduplicate it, and two releases never share an id.

State and delivery: held spans are per-process memory. `held_batches()` names the
transport batches that still have spans held here: a runtime that commits offsets after
sinks acknowledge (the distributed worker) must not commit past the oldest of them, or a
crash loses up to `decision_wait` of held spans; `flush()` releases everything (shutdown).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from pipeline.batch_ids import derived_batch, source_ids
from pipeline.component import BaseProcessor, ComponentConfig, ComponentContext, Factory
from pipeline.semconv import CONTEXT_KEYS
from pipeline.spans import Span, SpanBatch
from processors.holding import HoldsSpans

Ctx = dict[str, Any]


class ContextConfig(ComponentConfig):
    keys: list[str] = Field(
        default_factory=list,
        description="Attribute keys inherited from ancestors in addition to the built-in ones (user.id, "
        "tenant.id, customer.id, session.id, gen_ai.conversation.id, app.feature, user.tier).",
    )
    decision_wait: float = Field(
        10.0, gt=0, description="Seconds a rootless trace's spans are held (from its first span) waiting for the root."
    )
    max_traces: int = Field(50_000, gt=0, description="Traces held at most; beyond, the oldest are released.")
    max_spans: int = Field(500_000, gt=0, description="Spans held at most; beyond, the oldest traces are released.")
    remember_traces: int = Field(
        20_000, gt=0, description="Released traces whose span context is kept for late spans (LRU)."
    )

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not k or not k.strip():
                raise ValueError("keys: an attribute key must not be empty")
        return v


class _Pending:
    __slots__ = ("batches", "deadline", "spans")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.spans: list[Span] = []
        self.batches: set[str] = set()


class ContextProcessor(HoldsSpans, BaseProcessor):
    def __init__(
        self,
        component_id: str,
        config: ContextConfig,
        ctx: ComponentContext,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(component_id, ctx)
        self.config = config
        self.clock = clock or ctx.services.clock or time.monotonic
        keys = list(CONTEXT_KEYS)
        for k in config.keys:
            if k not in keys:
                keys.append(k)
        self.keys = tuple(keys)
        self._keyset = frozenset(keys)
        self._buffer: OrderedDict[str, _Pending] = OrderedDict()
        self._held_spans = 0
        # trace id -> span id -> effective context ("" -> the root's), for late spans.
        self._released: OrderedDict[str, dict[str, Ctx]] = OrderedDict()
        t = ctx.telemetry
        self._without_root = t.context_spans_without_root.labels(component_id)
        self._early = t.context_early_releases.labels(component_id)
        self._g_traces = t.context_buffered_traces.labels(component_id)
        self._g_spans = t.context_buffered_spans.labels(component_id)

    # --- the hot path ----------------------------------------------------------------------

    def process(self, batch: SpanBatch) -> SpanBatch:
        spans = batch.spans
        buffer = self._buffer
        if not spans and not buffer:
            return batch
        now = self.clock()
        by_trace: dict[str, list[Span]] = {}
        rooted: set[str] = set()
        for s in spans:
            tid = s.trace_id
            group = by_trace.get(tid)
            if group is None:
                by_trace[tid] = [s]
            else:
                group.append(s)
            if not s.parent_span_id:
                rooted.add(tid)
        out: list[Span] = []
        sources: set[str] = set()
        released = self._released
        own_sources = source_ids(batch)
        res_ctx: dict[int, Ctx] = {}  # resource -> its context values, once per batch
        for tid, group in by_trace.items():
            pending = buffer.get(tid)
            if pending is None:
                known = released.get(tid)
                if known is not None:  # late spans of a trace whose root went through
                    self._resolve(tid, group, known, res_ctx)
                    out.extend(group)
                    sources.update(own_sources)
                    continue
                if tid in rooted:
                    self._resolve(tid, group, None, res_ctx)
                    out.extend(group)
                    sources.update(own_sources)
                    continue
                pending = buffer[tid] = _Pending(now + self.config.decision_wait)
                pending.spans = group
            else:
                pending.spans.extend(group)
            pending.batches.update(own_sources)
            self._held_spans += len(group)
            if tid in rooted:
                del buffer[tid]
                self._release(tid, pending, out, sources, rooted=True, res_ctx=res_ctx)
        cfg = self.config
        early = 0
        while buffer and (len(buffer) > cfg.max_traces or self._held_spans > cfg.max_spans):
            tid, pending = buffer.popitem(last=False)
            early += 1
            self._release(tid, pending, out, sources, rooted=False, res_ctx=res_ctx)
        if early:
            self._early.inc(early)
        while buffer:
            tid, pending = next(iter(buffer.items()))
            if pending.deadline > now:
                break
            del buffer[tid]
            self._release(tid, pending, out, sources, rooted=False, res_ctx=res_ctx)
        self._gauges()
        if not sources or sources == set(own_sources):
            return batch.with_spans(out)
        return derived_batch("ctx", batch, out, sources)

    def _release(self, tid: str, pending: _Pending, out: list[Span], sources: set[str], *, rooted: bool,
                 res_ctx: dict[int, Ctx] | None = None) -> None:
        spans = pending.spans
        self._held_spans -= len(spans)
        if not rooted:
            self._without_root.inc(len(spans))
        self._resolve(tid, spans, None, res_ctx if res_ctx is not None else {})
        out.extend(spans)
        sources |= pending.batches

    def _gauges(self) -> None:
        self._g_traces.set(len(self._buffer))
        self._g_spans.set(self._held_spans)

    # --- resolution ------------------------------------------------------------------------

    def _resolve(self, tid: str, spans: list[Span], known: dict[str, Ctx] | None, res_ctx: dict[int, Ctx]) -> None:
        """Copy inherited context onto `spans` (one trace) and remember what they resolved to.

        `known`: the remembered context of the trace's earlier spans (span id -> context, "" -> the
        root's). A span whose parent is not among the spans takes the known parent's context, else
        the root's (every span of a trace sits below its root)."""
        keyset = self._keyset
        own: dict[str, Ctx] = {}
        root: Span | None = None
        for s in spans:
            if not s.parent_span_id:
                root = s
            a = s.attributes
            found = a.keys() & keyset
            r = s.resource
            rc = res_ctx.get(id(r))
            if rc is None:
                ra = r.attributes
                rc = res_ctx[id(r)] = {k: ra[k] for k in ra.keys() & keyset if ra[k] is not None and ra[k] != ""}
            if found or rc:
                o = dict(rc) if rc else {}
                for k in found:
                    v = a[k]
                    if v is not None and v != "":
                        o[k] = v
                if o:
                    own[s.span_id] = o
        empty: Ctx = {}
        if root is not None:
            root_ctx = own.get(root.span_id, empty)
        elif known is not None:
            root_ctx = known.get("", empty)
        else:
            root_ctx = empty
        if not own and not root_ctx:
            self._remember(tid, known, root, empty, None)
            return
        if root is not None and len(own) == (1 if root_ctx else 0) and known is None:
            # The common case: only the root carries context; every other span inherits it.
            for s in spans:
                if s is not root:
                    s.attributes.update(root_ctx)
            self._remember(tid, known, root, root_ctx, None)
            return
        by_id = {s.span_id: s for s in spans}
        memo: dict[str, Ctx] = {}
        limit = len(spans) + 1
        for s in spans:
            if s.span_id in memo:
                continue
            chain: list[Span] = []
            cur: Span | None = s
            while cur is not None and cur.span_id not in memo and len(chain) < limit:
                chain.append(cur)
                parent = cur.parent_span_id
                cur = by_id.get(parent) if parent else None
            if cur is not None and cur.span_id in memo:
                inherited = memo[cur.span_id]
            else:
                top_parent = chain[-1].parent_span_id
                if not top_parent:
                    inherited = empty
                elif known is not None and top_parent in known:
                    inherited = known[top_parent]
                else:
                    inherited = root_ctx
            for c in reversed(chain):
                o = own.get(c.span_id)
                if inherited:
                    attrs = c.attributes
                    for k, v in inherited.items():
                        if o is None or k not in o:
                            attrs[k] = v
                    mine = {**inherited, **o} if o else inherited
                else:
                    mine = o if o else empty
                memo[c.span_id] = mine
                inherited = mine
        self._remember(tid, known, root, root_ctx, memo)

    def _remember(self, tid: str, known: dict[str, Ctx] | None, root: Span | None, root_ctx: Ctx,
                  memo: dict[str, Ctx] | None) -> None:
        """Keep what late spans of this trace need: the root's context ("") and the spans whose
        context differs from it."""
        entry = known if known is not None else {}
        if root is not None or "" not in entry:
            entry[""] = root_ctx
        if memo:
            base = entry[""]
            for sid, c in memo.items():
                if c and c is not base and c != base:
                    entry[sid] = c
        released = self._released
        released[tid] = entry
        released.move_to_end(tid)
        while len(released) > self.config.remember_traces:
            released.popitem(last=False)

    # --- lifecycle -------------------------------------------------------------------------

    def flush(self) -> list[Any]:
        """Release every held trace now, resolved with what arrived (shutdown)."""
        out: list[Span] = []
        sources: set[str] = set()
        while self._buffer:
            tid, pending = self._buffer.popitem(last=False)
            self._release(tid, pending, out, sources, rooted=False)
        self._gauges()
        return out


factory = Factory(
    "context",
    ContextConfig,
    ContextProcessor,
    "Copies accounting attributes (user, tenant, customer, session, feature, tier) from ancestor spans onto "
    "descendants, holding a trace until its root arrives (bounded wait).",
)
