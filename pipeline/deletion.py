"""Forgetting: remove a user's, a trace's or a tenant's rows from every store tracepipe keeps.

`DELETE /api/users/{id}`, `/api/traces/{id}`, `/api/tenants/{id}` (admin) and `tracepipe forget`
build a `ForgetRequest` and run it through a `Forgetter`: a list of named hooks, one per store,
each an async callable returning how many rows it removed (per table or kind). The stores:

- `clickhouse` (the query sink's tables, `TraceQueries.forget`): spans (`otel_traces`) and trace
  summaries. A user's traces are removed whole: every trace with a span whose UserId is the user;
- `replay` (pipeline/replay/forget.py): replay items captured from the forgotten traces (they copy
  their messages) and those items' results, in the same ClickHouse store;
- `budgets` (pipeline/budgets/forget.py): Redis or local counters whose id holds the user (budgets
  with a `user` dimension), or every counter of the tenant; counters hold no trace ids;
- `alerts` (the in-memory alert store): events keyed by the user or of the tenant; a forgotten
  trace id is removed from `example_trace_ids`;
- `dead_letters` (pipeline/dead_letter/forget.py): the spans it names inside the embedded
  dead-letter store's entries (`<data_dir>/dead-letter/dead-letter.sqlite`);
- anything listed in `STORE_MODULES`: each module exposes `forget_hook(config, services)` returning
  `(name, hook)` or None. A store added by another area adds one line there and is then asked
  on every forget.

A failing store does not stop the others: its error is reported next to the other counts.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.services import Services

log = logging.getLogger("tracepipe.deletion")

ForgetKind = Literal["user", "trace", "tenant"]
FORGET_KINDS = ("user", "trace", "tenant")


@dataclass(frozen=True)
class ForgetRequest:
    kind: ForgetKind
    value: str  # the user id, the trace id (32 hex) or the tenant
    tenant: str | None = None  # only within this tenant (None: every tenant); a tenant request is its own

    def __post_init__(self) -> None:
        if self.kind not in FORGET_KINDS:
            raise ValueError(f"kind: must be one of {', '.join(FORGET_KINDS)}")
        if not self.value:
            raise ValueError(f"{self.kind}: an id is required")
        if self.kind == "trace":
            from pipeline.query.traces import normalize_trace_id

            object.__setattr__(self, "value", normalize_trace_id(self.value))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.value, "tenant": self.tenant}


ForgetHook = Callable[[ForgetRequest], Awaitable[dict[str, int]]]


@dataclass
class ForgetResult:
    request: ForgetRequest
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # store -> what -> rows
    errors: dict[str, str] = field(default_factory=dict)  # store -> error

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {**self.request.to_json(), "removed": self.removed, "errors": self.errors}


class Forgetter:
    """Named hooks, asked in order; register more with `register`."""

    def __init__(self) -> None:
        self.hooks: list[tuple[str, ForgetHook]] = []

    def register(self, name: str, hook: ForgetHook) -> None:
        self.hooks.append((name, hook))

    async def forget(self, request: ForgetRequest) -> ForgetResult:
        result = ForgetResult(request)
        for name, hook in self.hooks:
            try:
                result.removed[name] = await hook(request)
            except Exception as e:
                log.error("forget %s: the %s store failed (%s)", request.kind, name, type(e).__name__)
                result.errors[name] = f"{type(e).__name__}: {e}"[:300]
        return result


# Modules with `forget_hook(config, services) -> (name, hook) | None`: one line per store.
STORE_MODULES: list[str] = [
    "pipeline.budgets.forget",
    "pipeline.dead_letter.forget",
]


def store_hooks(config: Any, services: Services) -> list[tuple[str, ForgetHook]]:
    """The hooks of the stores in STORE_MODULES that this config has."""
    hooks = []
    for module_name in STORE_MODULES:
        hook = importlib.import_module(module_name).forget_hook(config, services)
        if hook is not None:
            hooks.append(hook)
    return hooks


def alerts_hook(store: Any) -> ForgetHook:
    """Forget in a `pipeline.alerts.AlertStore`: events keyed by the user (within the tenant) or of
    the tenant; a trace id is removed from the events' example traces."""
    from pipeline.tenants import DEFAULT_TENANT

    def match(event: dict[str, Any], req: ForgetRequest) -> bool:
        tenant = event.get("tenant") or DEFAULT_TENANT
        if req.kind == "tenant":
            return tenant == req.value
        if req.tenant is not None and tenant != req.tenant:
            return False
        key = event.get("key")
        return req.kind == "user" and isinstance(key, dict) and key.get("user") == req.value

    async def hook(req: ForgetRequest) -> dict[str, int]:
        if req.kind == "trace":
            return {"events_scrubbed": store.scrub_trace(req.value)}
        return {"events": store.forget(lambda e: match(e, req))}

    return hook


def build_forgetter(queries: Any, services: Services) -> Forgetter:
    """The forgetter of a process: its trace store, the services' stores (`services.forget_hooks`,
    set up by runtime_support.build_services) and its alert store."""
    f = Forgetter()
    if queries is not None:
        f.register("clickhouse", queries.forget)
        from pipeline.replay.forget import forget_hook as replay_forget_hook

        f.register("replay", replay_forget_hook(queries))
    for name, hook in services.forget_hooks:
        f.register(name, hook)
    if services.alerts is not None:
        f.register("alerts", alerts_hook(services.alerts))
    return f
