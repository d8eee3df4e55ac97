"""BudgetGuard: the check an application makes before an LLM call.

It reads the budget counters in Redis directly (the ones the budgets sink writes), so
it costs one round trip and works while tracepipe itself is busy or restarting:

    from pipeline.budgets.guard import BudgetGuard, BudgetExceeded

    guard = BudgetGuard("redis://localhost:6379/0")
    decision = guard.check(user="u-42", feature="summarize", tier="free")
    if not decision.allowed:
        return JSONResponse(decision.to_json(), status_code=decision.status_code,
                            headers=decision.headers())

    @guard.limit(user=lambda args: args["user_id"], feature="summarize")
    def summarize(user_id: str, text: str) -> str: ...          # raises BudgetExceeded

    async with guard.enforce(user=user_id, feature="chat"):      # raises BudgetExceeded
        reply = await client.chat.completions.create(...)

Every budget whose scope the call names is checked (a `user` budget when `user=` is
given, a `tenant+feature` budget when both are, global budgets always); the call is
refused (429, Retry-After = seconds until the latest of the exceeded periods resets)
when one has spent its limit, or would pass it with `estimated_usd` /
`estimated_tokens`. Budget definitions come from the sink (it publishes them to
Redis), or from `budgets=` (a budgets sink config or its parsed budgets).
Where counters live in the embedded pipeline's local store (no Redis), give
`api_url="http://127.0.0.1:8081"` instead: the pipeline's `GET /api/budgets/check` decides.
Spend is counted when spans reach tracepipe, so a refusal follows the spend by the
pipeline's latency (a batch timeout, typically well under a second).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.budgets.config import SCOPE_ALIASES, BudgetsSinkConfig, RedisConfig
from pipeline.budgets.model import Budget, CounterState, KeyLayout, build_budgets, encode_id, to_nano
from pipeline.budgets.status import BudgetStatus, is_exceeded, make_status, window_now
from pipeline.tenants import DEFAULT_TENANT

F = TypeVar("F", bound=Callable[..., Any])
ScopeValue = str | Callable[[Mapping[str, Any]], str | None] | None


@dataclass
class Decision:
    """The answer of a check: `allowed`, or refused with a 429 and when to retry."""

    allowed: bool
    status_code: int = 200
    retry_after: int | None = None
    reason: str = ""
    budgets: list[BudgetStatus] = field(default_factory=list)
    blocked: list[BudgetStatus] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "status_code": self.status_code,
            "retry_after": self.retry_after,
            "reason": self.reason,
            "blocked": [b.to_json() for b in self.blocked],
        }


class BudgetExceeded(Exception):
    """Raised by `limit` / `enforce` when a call is refused; carries the decision."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision
        self.status_code = decision.status_code
        self.retry_after = decision.retry_after


_DIMS = ("user", "tenant", "customer", "session", "feature", "model", "response_model", "provider", "service")


class BudgetGuard:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        api_url: str | None = None,
        api_timeout: float = 2.0,
        api_token: str | None = None,
        redis: RedisConfig | None = None,
        client: Any = None,
        async_client: Any = None,
        key_prefix: str = "tracepipe:budget",
        budgets: BudgetsSinkConfig | list[Budget] | None = None,
        fail_open: bool = True,
        definitions_ttl: float = 10.0,
        clock: Callable[[], float] = time.time,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        if redis is None and redis_url is not None:
            redis = RedisConfig(url=redis_url)
        if redis is None and client is None and async_client is None and api_url is None:
            raise ValueError("BudgetGuard needs a redis_url, a RedisConfig, a client or an api_url")
        self.api_url = api_url.rstrip("/") if api_url else None
        self.api_timeout = api_timeout
        # bearer token (`read` scope) when the API has auth; default: $TRACEPIPE_TOKEN
        self.api_token = api_token or os.environ.get("TRACEPIPE_TOKEN") or None
        self.redis_cfg = redis
        self._client = client
        self._async_client = async_client
        if isinstance(budgets, BudgetsSinkConfig):
            key_prefix = budgets.key_prefix
            budgets = build_budgets(budgets)
        self.layout = KeyLayout(key_prefix)
        self._fixed = budgets
        self._defs: list[Budget] = []
        self._defs_at = float("-inf")
        self.fail_open = fail_open
        self.definitions_ttl = definitions_ttl
        self.clock = clock
        self.tenant = tenant  # the tracepipe tenant whose counters are read (its ingest token's)

    # --- clients ---------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from pipeline.budgets.connection import connect_sync

            self._client = connect_sync(self.redis_cfg)  # type: ignore[arg-type]
        return self._client

    @property
    def async_client(self) -> Any:
        if self._async_client is None:
            from pipeline.budgets.connection import connect_async

            self._async_client = connect_async(self.redis_cfg)  # type: ignore[arg-type]
        return self._async_client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()

    # --- checks ----------------------------------------------------------------------

    def check(
        self,
        *,
        tier: str | None = None,
        estimated_usd: float = 0.0,
        estimated_tokens: int = 0,
        **scope: str | None,
    ) -> Decision:
        """Decide whether a call for this user/tenant/feature/... may go ahead (blocking I/O)."""
        from redis.exceptions import RedisError

        values = scope_values(scope)
        if self.api_url is not None:
            return self._ask_api(values, tier, estimated_usd, estimated_tokens)
        try:
            budgets = self._budgets_sync()
            plan = self._plan(budgets, values)
            pipe = self.client.pipeline(transaction=False)
            for _b, _id, key, _s, _e in plan:
                pipe.hgetall(key)
            rows = pipe.execute() if plan else []
        except (RedisError, OSError) as e:
            return self._unavailable(e)
        return self._decide(plan, rows, tier, estimated_usd, estimated_tokens)

    async def acheck(
        self,
        *,
        tier: str | None = None,
        estimated_usd: float = 0.0,
        estimated_tokens: int = 0,
        **scope: str | None,
    ) -> Decision:
        """`check` for asyncio applications (redis.asyncio)."""
        from redis.exceptions import RedisError

        values = scope_values(scope)
        if self.api_url is not None:
            import asyncio

            return await asyncio.to_thread(self._ask_api, values, tier, estimated_usd, estimated_tokens)
        try:
            budgets = await self._budgets_async()
            plan = self._plan(budgets, values)
            pipe = self.async_client.pipeline(transaction=False)
            for _b, _id, key, _s, _e in plan:
                pipe.hgetall(key)
            rows = await pipe.execute() if plan else []
        except (RedisError, OSError) as e:
            return self._unavailable(e)
        return self._decide(plan, rows, tier, estimated_usd, estimated_tokens)

    def limit(self, **scope: ScopeValue) -> Callable[[F], F]:
        """Decorator: refuse (raise BudgetExceeded) before calling the function when over budget.

        Scope values are constants or callables given the call's bound arguments
        (`user=lambda args: args["user_id"]`); `tier`, `estimated_usd` and `estimated_tokens`
        may be given the same way."""

        def decorate(fn: F) -> F:
            sig = inspect.signature(fn)

            def resolve(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
                bound = sig.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                return {k: (v(bound.arguments) if callable(v) else v) for k, v in scope.items()}

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    decision = await self.acheck(**resolve(args, kwargs))
                    if not decision.allowed:
                        raise BudgetExceeded(decision)
                    return await fn(*args, **kwargs)

                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                decision = self.check(**resolve(args, kwargs))
                if not decision.allowed:
                    raise BudgetExceeded(decision)
                return fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def enforce(self, **scope: Any) -> _Enforcement:
        """A context manager (`with` or `async with`) that raises BudgetExceeded on entry when refused."""
        return _Enforcement(self, scope)

    # --- internals -------------------------------------------------------------------

    def _budgets_sync(self) -> list[Budget]:
        if self._fixed is not None:
            return self._fixed
        now = self.clock()
        if now - self._defs_at >= self.definitions_ttl:
            raw = self.client.hgetall(self.layout.defs)
            self._defs = [Budget.from_json(json.loads(v)) for v in raw.values()]
            self._defs_at = now
        return self._defs

    async def _budgets_async(self) -> list[Budget]:
        if self._fixed is not None:
            return self._fixed
        now = self.clock()
        if now - self._defs_at >= self.definitions_ttl:
            raw = await self.async_client.hgetall(self.layout.defs)
            self._defs = [Budget.from_json(json.loads(v)) for v in raw.values()]
            self._defs_at = now
        return self._defs

    def _plan(self, budgets: list[Budget], values: dict[str, str]) -> list[PlannedCheck]:
        return plan_checks(budgets, self.layout, values, self.clock(), self.tenant)

    def _decide(
        self,
        plan: list[PlannedCheck],
        rows: list[Any],
        tier: str | None,
        estimated_usd: float,
        estimated_tokens: int,
    ) -> Decision:
        counters = [CounterState.from_hash(r) for r in rows]
        return decide(plan, counters, self.clock(), tier, estimated_usd, estimated_tokens)

    def _ask_api(
        self, values: dict[str, str], tier: str | None, estimated_usd: float, estimated_tokens: int
    ) -> Decision:
        import urllib.error
        import urllib.parse
        import urllib.request

        params: dict[str, Any] = dict(values)
        if tier:
            params["tier"] = tier
        if estimated_usd:
            params["estimated_usd"] = estimated_usd
        if estimated_tokens:
            params["estimated_tokens"] = estimated_tokens
        if self.tenant != DEFAULT_TENANT:
            params["as_tenant"] = self.tenant  # a read token's own tenant wins; an admin's picks this one
        url = f"{self.api_url}/api/budgets/check?{urllib.parse.urlencode(params)}"
        try:
            headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.api_timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            if e.code != 429:
                return self._unavailable(e)
            body = json.loads(e.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            return self._unavailable(e)
        return Decision(
            allowed=bool(body["allowed"]),
            status_code=int(body["status_code"]),
            retry_after=body.get("retry_after"),
            reason=body.get("reason", ""),
            blocked=[BudgetStatus(**b) for b in body.get("blocked", [])],
        )

    def _unavailable(self, e: BaseException) -> Decision:
        reason = f"budget store unavailable ({type(e).__name__})"
        if self.fail_open:
            return Decision(allowed=True, reason=reason)
        return Decision(allowed=False, status_code=503, retry_after=1, reason=reason)


PlannedCheck = tuple[Budget, str, str, int, int]  # budget, id, counter key, period start, period end


def plan_checks(
    budgets: list[Budget], layout: KeyLayout, values: dict[str, str], now: float, tenant: str = DEFAULT_TENANT
) -> list[PlannedCheck]:
    """The budgets a call naming `values` (dimension -> id) falls under, and the keys of `tenant`'s
    current counters."""
    plan = []
    for b in budgets:
        if not all(d in values for d in b.dims):
            continue
        id_ = encode_id(tuple(values[d] for d in b.dims))
        start, end = window_now(b, now)
        plan.append((b, id_, layout.counter(b.name, start, id_, tenant), start, end))
    return plan


def decide(
    plan: list[PlannedCheck],
    counters: list[CounterState | None],
    now: float,
    tier: str | None = None,
    estimated_usd: float = 0.0,
    estimated_tokens: int = 0,
) -> Decision:
    """Allowed unless a budget has reached its limit or would pass it with the estimate."""
    add_nusd = to_nano(estimated_usd) if estimated_usd > 0 else 0
    statuses: list[BudgetStatus] = []
    blocked: list[BudgetStatus] = []
    for (b, id_, _key, start, end), counter in zip(plan, counters, strict=True):
        st = make_status(b, id_, counter, start, end, now, tier)
        statuses.append(st)
        c = counter or CounterState()
        limit = c.limit if c.limit is not None else b.limit_for(id_, tier)
        if is_exceeded(c.nusd, c.tokens, limit, add_nusd, max(0, estimated_tokens)):
            blocked.append(st)
    if not blocked:
        return Decision(allowed=True, budgets=statuses)
    retry_after = max(1, int(max(s.reset_in_seconds for s in blocked) + 0.999))
    names = ", ".join(f"{s.budget} ({s.period})" for s in blocked)
    return Decision(
        allowed=False,
        status_code=429,
        retry_after=retry_after,
        reason=f"budget exceeded: {names}",
        budgets=statuses,
        blocked=blocked,
    )


def scope_values(scope: Mapping[str, str | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.items():
        dim = SCOPE_ALIASES.get(k, k)
        if dim not in _DIMS:
            raise TypeError(f"unknown scope {k!r} (known: {', '.join(_DIMS)})")
        if v is not None and v != "":
            out[dim] = str(v)
    return out


class _Enforcement:
    def __init__(self, guard: BudgetGuard, scope: dict[str, Any]) -> None:
        self.guard = guard
        self.scope = scope
        self.decision: Decision | None = None

    def __enter__(self) -> Decision:
        self.decision = self.guard.check(**self.scope)
        if not self.decision.allowed:
            raise BudgetExceeded(self.decision)
        return self.decision

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> Decision:
        self.decision = await self.guard.acheck(**self.scope)
        if not self.decision.allowed:
            raise BudgetExceeded(self.decision)
        return self.decision

    async def __aexit__(self, *exc: object) -> None:
        return None
