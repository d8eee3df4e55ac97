"""From a batch of spans to counter increments: pure logic, one pass over the spans.

A span counts when it carries a cost (`gen_ai.usage.cost_usd`) or tokens
(`gen_ai.usage.input_tokens` / `output_tokens`). For every budget whose scope values
the span has, its cost (rounded to nano-USD per span), tokens and a span count are
added to the group (budget, period, id). Groups become `Increment`s with the limit
resolved for the id and its tier.

The period is the one holding the span's end time (`time_source: span`) or the sink's
clock (`arrival`). Spans ending beyond `max_future_skew` in the future, and spans whose
period expired (ended more than `key_grace` ago), count in the current period: spend is
never silently dropped for a bad client clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline import semconv
from pipeline.budgets.model import NANO, Budget, Increment, KeyLayout, encode_id
from pipeline.spans import Span, attr_float, attr_int, attr_str
from pipeline.tenants import tenant_of

COST = semconv.GEN_AI_COST_USD
# Per-span sanity caps: a corrupt value must not overflow Redis's 64-bit counters or poison a batch.
MAX_SPAN_USD = 1_000_000.0
MAX_SPAN_TOKENS = 10**12
INPUT_TOKENS = semconv.GEN_AI_INPUT_TOKENS
OUTPUT_TOKENS = semconv.GEN_AI_OUTPUT_TOKENS


def _tenant(span: Span) -> str | None:
    # The resource's tenant.id is the one the receiver stamps from the auth token: it wins.
    return attr_str(span.resource.attributes, semconv.TENANT_ID) or attr_str(span.attributes, semconv.TENANT_ID)


def _session(span: Span) -> str | None:
    a = span.attributes
    return attr_str(a, semconv.SESSION_ID) or attr_str(a, semconv.GEN_AI_CONVERSATION_ID)


DIM_EXTRACTORS: dict[str, Callable[[Span], str | None]] = {
    "user": lambda s: attr_str(s.attributes, semconv.USER_ID),
    "tenant": _tenant,
    "customer": lambda s: attr_str(s.attributes, semconv.CUSTOMER_ID),
    "session": _session,
    "feature": lambda s: attr_str(s.attributes, semconv.APP_FEATURE),
    "model": lambda s: semconv.model_of(s.attributes),
    "response_model": lambda s: semconv.response_model_of(s.attributes),
    "provider": lambda s: attr_str(s.attributes, semconv.GEN_AI_PROVIDER),
    "service": lambda s: s.resource.service_name,
}


@dataclass
class AccountingStats:
    priced_spans: int = 0
    late_spans: int = 0  # span x budget counted in the current period because theirs had expired


class Accountant:
    def __init__(
        self,
        budgets: list[Budget],
        layout: KeyLayout,
        *,
        time_source: str = "span",
        max_future_skew: float = 300.0,
        key_grace: float = 3600.0,
    ) -> None:
        self.budgets = budgets
        self.layout = layout
        self.use_span_time = time_source == "span"
        self.max_future_skew = max_future_skew
        self.key_grace = int(key_grace)
        self._dims = sorted({d for b in budgets for d in b.dims})

    def collect(self, spans: Iterable[Span], now: float, stats: AccountingStats | None = None) -> list[Increment]:
        stats = stats if stats is not None else AccountingStats()
        # Group by raw values; ids are encoded once per group, not per span.
        # Per tracepipe tenant: two tenants' equal ids never share a counter.
        groups: dict[tuple[int, int, str, tuple[str, ...]], list] = {}
        plan = [(bi, b, b.clock, b.dims, b.tier_attribute) for bi, b in enumerate(self.budgets)]
        extractors = [(d, DIM_EXTRACTORS[d]) for d in self._dims]
        horizon = now + self.max_future_skew
        use_span_time = self.use_span_time
        priced = 0
        late = 0
        grace = self.key_grace
        for span in spans:
            a = span.attributes
            cost = attr_float(a, COST)
            tin = attr_int(a, INPUT_TOKENS)
            tout = attr_int(a, OUTPUT_TOKENS)
            if cost is None and tin is None and tout is None:
                continue
            priced += 1
            if cost is not None and cost > 0:
                nusd = round(min(cost, MAX_SPAN_USD) * NANO) if math.isfinite(cost) else 0
            else:
                nusd = 0
            tokens = min((tin if tin and tin > 0 else 0) + (tout if tout and tout > 0 else 0), MAX_SPAN_TOKENS)
            ts = now
            if use_span_time and span.end_ns > 0:
                ts = span.end_ns / 1e9
                if ts > horizon:
                    ts = now
            values = {d: fn(span) for d, fn in extractors}
            tenant = tenant_of(span)
            for bi, _b, clock, dims, tier_attr in plan:
                vals = tuple([values[d] for d in dims])
                if None in vals:
                    continue
                start, end = clock.window(ts)
                if end + grace <= now:  # its period is gone: late spend still counts, in the current period
                    start = clock.window(now)[0]
                    late += 1
                gk = (bi, start, tenant, vals)
                acc = groups.get(gk)
                if acc is None:
                    acc = groups[gk] = [0, 0, 0, None]
                acc[0] += nusd
                acc[1] += tokens
                acc[2] += 1
                tier = a.get(tier_attr)
                if tier is not None:
                    acc[3] = str(tier)
        stats.priced_spans += priced
        stats.late_spans += late
        out: list[Increment] = []
        for (bi, start, tenant, vals), (nusd, tokens, n, tier) in groups.items():
            b = self.budgets[bi]
            _s, end = b.clock.window(start)
            expire_at = end + self.key_grace
            id_ = encode_id(vals)
            out.append(
                Increment(
                    key=self.layout.counter(b.name, start, id_, tenant),
                    budget=b,
                    scope_id=id_,
                    period_start=start,
                    period_end=end,
                    expire_at=expire_at,
                    nusd=nusd,
                    tokens=tokens,
                    spans=n,
                    limit=b.limit_for(id_, tier),
                    tier=tier or "",
                    tenant=tenant,
                )
            )
        return out
