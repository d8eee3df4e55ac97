"""Reading traces and spend back from the clickhouse sink's tables.

`TraceQueries` answers the questions behind `tracepipe traces show|list`, `tracepipe cost`
and the HTTP API (/api/traces, /api/analytics/cost). Every method returns plain JSON-able
dicts; the CLI renders the same dicts (pipeline/query/render.py) whether it got them from a
running pipeline's API or opened the store itself.

- `get_trace(trace_id)`: every span with typed fields, attributes, events and links, the
  span tree (children nested; each node has its own cost/tokens and its subtree's totals)
  and trace totals (duration, cost, tokens, spans, errors).
- `list_traces(...)`: trace summaries, newest first, from the per-trace summary table,
  filtered and paginated by an opaque keyset cursor.
- `cost_by(by, since)`: spend, tokens, calls and p50/p95 latency per model (the request
  model, else the response model), response_model, service, operation, provider, session
  (session.id, else gen_ai.conversation.id) or customer (customer.id) from the LLM span
  rows, or per user, feature or tenant (trace-level attribution: the value set anywhere in
  a trace owns the cost of all its spans).

Values from users only ever reach SQL as bound parameters. Reads run on one dedicated
thread (chDB is safe with one writer and one reader thread in a process); the client is
opened lazily on that thread, so a locked chDB directory surfaces as `StoreLockedError`
from the first query.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.query.store import open_client, resolve_dsn

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}
_MAX_SINCE_NS = 100 * 366 * 86400 * 10**9
_MISSING_CODES = {60, 81}  # UNKNOWN_TABLE, UNKNOWN_DATABASE: nothing stored yet

COST_DIMENSIONS = (
    "model", "response_model", "service", "user", "feature", "operation", "provider", "session", "tenant", "customer",
)  # fmt: skip
# The model identity (pipeline/semconv.py model_of): the request model, else the response model.
MODEL_EXPR = "if(RequestModel != '', RequestModel, ResponseModel)"
# A conversation's id: session.id, else gen_ai.conversation.id.
SESSION_EXPR = "if(SessionId != '', SessionId, ConversationId)"
# Dimensions grouped over LLM span rows (fixed SQL expressions, never user input).
_SPAN_GROUP_EXPR = {
    "model": MODEL_EXPR,
    "response_model": "if(ResponseModel != '', ResponseModel, RequestModel)",
    "service": "ServiceName",
    "operation": "GenAiOperation",
    "provider": "GenAiProvider",
    "session": SESSION_EXPR,
    "customer": "SpanAttributes['customer.id']",
}
# Dimensions taken from trace-level attribution in the summary table.
_TRACE_GROUP_EXPR = {"user": "max(UserId)", "feature": "max(Feature)", "tenant": "max(TenantId)"}
TRACE_STATUSES = ("ok", "error", "unset")
MAX_LIMIT = 1000
MAX_TRACE_SPANS = 50_000


def parse_since(text: str) -> int:
    """A look-back window like `15m`, `24h`, `7d` (also s, w) in nanoseconds; ValueError otherwise."""
    text = str(text)
    m = _DURATION.match(text) if len(text) <= 32 else None
    if not m:
        shown = repr(text) if len(text) <= 40 else f"{text[:40]!r}..."
        raise ValueError(f"since: {shown} is not a duration like 15m, 24h or 7d (units s, m, h, d, w)")
    number = float(m.group(1))
    if number * _UNIT_NS[m.group(2)] > _MAX_SINCE_NS:  # also inf, from hundreds of digits
        raise ValueError(f"since: {text!r} is longer than 100 years")
    ns = int(number * _UNIT_NS[m.group(2)])
    if ns <= 0:
        raise ValueError(f"since: {text!r} must be longer than zero")
    if ns > _MAX_SINCE_NS:
        raise ValueError(f"since: {text!r} is longer than 100 years")
    return ns


def normalize_trace_id(trace_id: str) -> str:
    """The trace id as 32 lowercase hex chars; ValueError otherwise."""
    tid = str(trace_id).strip().lower()
    if not _HEX32.match(tid):
        raise ValueError("trace_id: a trace id is 32 hex characters")
    return tid


def encode_cursor(start_ns: int, trace_id: str) -> str:
    return base64.urlsafe_b64encode(f"{start_ns}:{trace_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, tid = raw.split(":", 1)
        return int(start), normalize_trace_id(tid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("cursor: not a cursor returned by a previous page") from None


def _and_where(where: str, condition: str) -> str:
    """`where` (a WHERE clause or "") with `condition` added."""
    if not condition:
        return where
    return f"{where} AND {condition}" if where else f"WHERE {condition}"


# The aggregates list_traces' HAVING and ORDER BY may use, by alias (its first phase computes only these).
_PAGE_KEYS = {
    "StartNs": "toUnixTimestamp64Nano(min(Start))",
    "Errors": "sum(ErrorCount)",
    "Cost": "sum(CostUsd)",
    "RootStatus": "max(RootStatusCode)",
    "Svcs": "groupUniqArrayArray(Services)",
    "Mdls": "groupUniqArrayArray(Models)",
    "TraceUser": "max(UserId)",
    "TraceTenant": "max(TenantId)",
}


def _none_if_empty(value: str) -> str | None:
    return value if value else None


def _trace_status(errors: int, root_status: str) -> str:
    if errors:
        return "Error"
    return root_status if root_status in ("Ok", "Unset") else "Unset"


_SPAN_COLUMNS = """
    toUnixTimestamp64Nano(Timestamp) AS StartNs, SpanId, ParentSpanId, TraceState, SpanName, SpanKind,
    ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS EventTimes, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`,
    GenAiProvider, GenAiOperation, RequestModel, ResponseModel, InputTokens, OutputTokens, CacheReadTokens,
    CacheCreationTokens, CostUsd, UserId, SessionId, ConversationId, Feature, TenantId"""

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def _span_dict(trace_id: str, r: tuple[Any, ...]) -> dict[str, Any]:
    (
        start_ns,
        span_id,
        parent,
        state,
        name,
        kind,
        service,
        res_attrs,
        scope_name,
        scope_version,
        attrs,
        duration,
        status_code,
        status_message,
        ev_times,
        ev_names,
        ev_attrs,
        ln_traces,
        ln_spans,
        ln_states,
        ln_attrs,
        provider,
        operation,
        req_model,
        resp_model,
        in_tok,
        out_tok,
        cr_tok,
        cc_tok,
        cost,
        user,
        session,
        conversation,
        feature,
        tenant,
    ) = r
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "trace_state": state,
        "name": name,
        "kind": kind,
        "service_name": service,
        "start_ns": int(start_ns),
        "end_ns": int(start_ns) + int(duration),
        "duration_ns": int(duration),
        "status_code": status_code,
        "status_message": status_message,
        "scope_name": scope_name,
        "scope_version": scope_version,
        "provider": _none_if_empty(provider),
        "operation": _none_if_empty(operation),
        "request_model": _none_if_empty(req_model),
        "response_model": _none_if_empty(resp_model),
        "model": _none_if_empty(req_model or resp_model),
        "input_tokens": int(in_tok),
        "output_tokens": int(out_tok),
        "cache_read_tokens": int(cr_tok),
        "cache_creation_tokens": int(cc_tok),
        "cost_usd": cost,
        "user_id": _none_if_empty(user),
        "session_id": _none_if_empty(session),
        "conversation_id": _none_if_empty(conversation),
        "feature": _none_if_empty(feature),
        "tenant_id": _none_if_empty(tenant),
        "attributes": dict(attrs),
        "resource_attributes": dict(res_attrs),
        "events": [
            {"time_ns": int(t), "name": n, "attributes": dict(a)}
            for t, n, a in zip(ev_times, ev_names, ev_attrs, strict=False)
        ],
        "links": [
            {"trace_id": t, "span_id": s, "trace_state": st, "attributes": dict(a)}
            for t, s, st, a in zip(ln_traces, ln_spans, ln_states, ln_attrs, strict=False)
        ],
    }


def _add_cost(a: float | None, b: float | None) -> float | None:
    """NULL-aware sum: unpriced (None) never becomes 0, a priced part keeps its value."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def build_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans nested by parent (roots: no parent, or a parent not in the trace), children
    by start time. Each node carries its own figures and `subtree` totals (itself included)."""
    nodes: dict[str, dict[str, Any]] = {}
    for s in spans:
        nodes[s["span_id"]] = {
            "span_id": s["span_id"],
            "parent_span_id": s["parent_span_id"],
            "name": s["name"],
            "service_name": s["service_name"],
            "kind": s["kind"],
            "start_ns": s["start_ns"],
            "duration_ns": s["duration_ns"],
            "status_code": s["status_code"],
            "status_message": s["status_message"],
            "model": s["model"],
            "operation": s["operation"],
            "provider": s["provider"],
            "cost_usd": s["cost_usd"],
            **{f: s[f] for f in _TOKEN_FIELDS},
            "children": [],
        }
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node["parent_span_id"]) if node["parent_span_id"] else None
        if parent is None or parent is node:
            node["orphan"] = bool(node["parent_span_id"])
            roots.append(node)
        else:
            parent["children"].append(node)
    # Spans on a parent cycle are unreachable from any root: break the cycle at one of them.
    reached: set[str] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        reached.add(n["span_id"])
        stack.extend(n["children"])
    for sid, node in nodes.items():
        if sid not in reached:
            parent = nodes[node["parent_span_id"]]
            parent["children"] = [c for c in parent["children"] if c is not node]
            node["orphan"] = True
            roots.append(node)
            stack = [node]
            while stack:
                n = stack.pop()
                reached.add(n["span_id"])
                stack.extend(n["children"])
    # Subtree totals, children before parents (iterative: traces can be deep).
    order: list[dict[str, Any]] = []
    stack = list(roots)
    while stack:
        n = stack.pop()
        order.append(n)
        n["children"].sort(key=lambda c: (c["start_ns"], c["span_id"]))
        stack.extend(n["children"])
    for n in reversed(order):
        sub = {
            "cost_usd": n["cost_usd"],
            **{f: n[f] for f in _TOKEN_FIELDS},
            "spans": 1,
            "errors": 1 if n["status_code"] == "Error" else 0,
        }
        for c in n["children"]:
            cs = c["subtree"]
            sub["cost_usd"] = _add_cost(sub["cost_usd"], cs["cost_usd"])
            for f in (*_TOKEN_FIELDS, "spans", "errors"):
                sub[f] += cs[f]
        n["subtree"] = sub
    roots.sort(key=lambda c: (c["start_ns"], c["span_id"]))
    return roots


def trace_totals(spans: list[dict[str, Any]]) -> dict[str, Any]:
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    cost: float | None = None
    for s in spans:
        cost = _add_cost(cost, s["cost_usd"])
    return {
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "cost_usd": cost,
        **{f: sum(s[f] for s in spans) for f in _TOKEN_FIELDS},
        "spans": len(spans),
        "errors": sum(1 for s in spans if s["status_code"] == "Error"),
        "llm_calls": sum(1 for s in spans if s["model"]),
    }


class TraceQueries:
    """Async queries over the clickhouse sink's tables (`database`.`table` and its summary)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        *,
        database: str = "tracepipe",
        table: str = "otel_traces",
        clock_ns: Callable[[], int] = time.time_ns,
        logs_table: str = "otel_logs",
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self.database = database
        self.table = table
        self.spans_table = f"`{database}`.`{table}`"
        self.summary_table = f"`{database}`.`{table}_trace_summary`"
        self._clock_ns = clock_ns
        self.logs_table = logs_table  # log records joined onto get_trace (pipeline/query/logs.py)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-queries")

    @classmethod
    def from_sink_config(cls, cfg: Any, data_dir: str | Path, **kwargs: Any) -> TraceQueries:
        """Queries over what a clickhouse sink with config `cfg` writes (the client opens lazily)."""
        dsn = resolve_dsn(cfg.dsn, data_dir)
        username, password = cfg.username, cfg.password
        return cls(
            lambda: open_client(dsn, username=username, password=password, create=False),
            database=cfg.database,
            table=cfg.table,
            logs_table=getattr(cfg, "logs_table", "otel_logs"),
            **kwargs,
        )

    @classmethod
    def from_client(cls, client: Any, **kwargs: Any) -> TraceQueries:
        return cls(lambda: client, **kwargs)

    # --- plumbing --------------------------------------------------------------------

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        if self._client is None:
            self._client = self._client_factory()
        try:
            return list(self._client.query(sql, parameters=params).result_rows)
        except DatabaseError as e:
            if getattr(e, "code", None) in _MISSING_CODES or re.search(r"Code: (60|81)\.", str(e)):
                return []  # nothing stored yet
            raise

    async def _query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._rows, sql, params)

    async def run_on_client(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(client, *args)` on the query thread (writers of small tables: scores)."""

        def call() -> Any:
            if self._client is None:
                self._client = self._client_factory()
            return fn(self._client, *args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def close(self) -> None:
        def _close() -> None:
            if self._client is not None:
                self._client.close()
                self._client = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, _close)
        finally:
            self._executor.shutdown(wait=True)

    def _candidates(self, conditions: list[str]) -> str:
        """A WHERE clause keeping the traces with at least one summary row meeting each condition."""
        return "".join(
            f"{'WHERE' if i == 0 else ' AND'} TraceId IN (SELECT TraceId FROM {self.summary_table} WHERE {c})"
            for i, c in enumerate(conditions)
        )

    def _cutoff(self, since: str | None) -> int | None:
        return None if since is None else self._clock_ns() - parse_since(since)

    # --- one trace -------------------------------------------------------------------

    async def get_trace(self, trace_id: str, *, tenant: str | None = None) -> dict[str, Any] | None:
        """One trace, or None when it is not stored (or belongs to another tenant than `tenant`)."""
        tid = normalize_trace_id(trace_id)
        params: dict[str, Any] = {"tid": tid, "max_spans": MAX_TRACE_SPANS}
        only = ""
        if tenant is not None:
            params["tenant"] = tenant
            only = " AND TenantId = {tenant:String}"
        bounds = await self._query(
            f"SELECT count(), toUnixTimestamp64Nano(min(Start)), toUnixTimestamp64Nano(max(End)) "
            f"FROM {self.summary_table} WHERE TraceId = {{tid:String}}{only}",
            params,
        )
        window = ""
        if bounds and bounds[0][0]:
            # Partition pruning, as the exporter's trace_id_ts lookup table does.
            params["lo"], params["hi"] = int(bounds[0][1]), int(bounds[0][2])
            window = (
                " AND toDate(Timestamp) BETWEEN toDate(fromUnixTimestamp64Nano({lo:Int64}))"
                " AND toDate(fromUnixTimestamp64Nano({hi:Int64}))"
            )
        rows = await self._query(
            f"SELECT {_SPAN_COLUMNS} FROM {self.spans_table} WHERE TraceId = {{tid:String}}{only}{window}"
            " ORDER BY Timestamp, SpanId LIMIT 1 BY SpanId LIMIT {max_spans:UInt32}",
            params,
        )
        if not rows:
            return None
        spans = [_span_dict(tid, r) for r in rows]
        totals = trace_totals(spans)
        tree = build_tree(spans)
        root = tree[0] if tree else None
        from pipeline.query.logs import attach_logs
        from pipeline.query.scores import scores_for

        trace = await attach_logs(
            self,
            {
                "trace_id": tid,
                "root_name": root["name"] if root else None,
                "root_service": root["service_name"] if root else None,
                "totals": totals,
                "tree": tree,
                "spans": spans,
            },
        )
        trace["scores"] = await scores_for(self, tid, tenant)  # pipeline/query/scores.py
        return trace

    async def add_score(self, score: Any, tenant: str) -> dict[str, Any]:
        from pipeline.query.scores import insert_score

        return await insert_score(self, score, tenant)

    async def quality_by(self, by: str = "model", name: str | None = None, since: str | None = "7d", *,
                         tenant: str | None = None) -> list[dict[str, Any]]:
        """Cost versus mean score per group (pipeline/query/scores.py)."""
        from pipeline.query.scores import quality_by

        return await quality_by(self, by, name, since, tenant=tenant)

    # --- trace lists -----------------------------------------------------------------

    async def list_traces(
        self,
        *,
        service: str | None = None,
        model: str | None = None,
        user: str | None = None,
        status: str | None = None,
        min_cost: float | None = None,
        since: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        offset: int = 0,
        tenant: str | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Trace summaries newest first; `next` is the cursor of the following page (or None).
        `tenant`: only that tenant's traces (None: every tenant)."""
        limit = int(limit)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}")
        if int(offset) < 0:
            raise ValueError("offset: must be >= 0")
        params: dict[str, Any] = {"limit": limit + 1, "offset": int(offset)}
        having = ["1"]
        # Candidate traces: some summary row matches. Cheap to find, and every row of a candidate
        # is still aggregated, so HAVING judges whole traces.
        candidates: list[str] = []
        tenant_rows = ""  # only this tenant's summary rows count
        if tenant is not None:
            params["tenant"] = tenant
            candidates.append("TenantId = {tenant:String}")
            having.append("TraceTenant = {tenant:String}")
            tenant_rows = "TenantId = {tenant:String}"
        cutoff = self._cutoff(since)
        if cutoff is not None:
            params["cutoff"] = cutoff
            candidates.append("Start >= fromUnixTimestamp64Nano({cutoff:Int64})")
            having.append("StartNs >= {cutoff:Int64}")
        if service:
            params["service"] = service
            candidates.append("has(Services, {service:String})")
            having.append("has(Svcs, {service:String})")
        if model:
            params["model"] = model
            candidates.append("has(Models, {model:String})")
            having.append("has(Mdls, {model:String})")
        if user:
            params["user"] = user
            candidates.append("UserId = {user:String}")
            having.append("TraceUser = {user:String}")
        session_filter = ""
        if session:
            params["session"] = session
            # Any span of the trace in the session (session.id, else gen_ai.conversation.id).
            session_filter = (
                f"TraceId IN (SELECT TraceId FROM {self.spans_table} "
                "WHERE SessionId = {session:String} OR ConversationId = {session:String})"
            )
        if status is not None:
            st = str(status).lower()
            if st not in TRACE_STATUSES:
                raise ValueError(f"status: must be one of {', '.join(TRACE_STATUSES)}")
            having.append(
                {
                    "error": "Errors > 0",
                    "ok": "Errors = 0 AND RootStatus = 'Ok'",
                    "unset": "Errors = 0 AND RootStatus != 'Ok'",
                }[st]
            )
        if min_cost is not None:
            mc = float(min_cost)
            if mc != mc or mc < 0:
                raise ValueError("min_cost: must be a number >= 0")
            params["min_cost"] = mc
            having.append("Cost >= {min_cost:Float64}")
        if cursor:
            c_start, c_tid = decode_cursor(cursor)
            params["c_start"], params["c_tid"] = c_start, c_tid
            having.append("(StartNs < {c_start:Int64} OR (StartNs = {c_start:Int64} AND TraceId < {c_tid:String}))")
        where = _and_where(_and_where(self._candidates(candidates), tenant_rows), session_filter)
        # Two phases: the page's trace ids first, aggregating only what HAVING and ORDER BY need, then
        # the full summaries of those ids (on 1 M spans the full aggregation of every trace dominated).
        having_sql = " AND ".join(having)
        needed = ", ".join(f"{expr} AS {alias}" for alias, expr in _PAGE_KEYS.items()
                           if alias == "StartNs" or re.search(rf"\b{alias}\b", having_sql))
        page_ids = (
            f"TraceId IN (SELECT TraceId FROM (SELECT TraceId, {needed} FROM {self.summary_table} {where} "
            f"GROUP BY TraceId HAVING {having_sql} ORDER BY StartNs DESC, TraceId DESC "
            "LIMIT {limit:UInt32} OFFSET {offset:UInt64}))"
        )
        sql = f"""
SELECT TraceId,
    toUnixTimestamp64Nano(min(Start)) AS StartNs,
    toUnixTimestamp64Nano(max(End)) AS EndNs,
    sum(SpanCount) AS Spans, sum(ErrorCount) AS Errors, sum(LlmCalls) AS Calls, sum(CostUsd) AS Cost,
    sum(InputTokens) AS InTok, sum(OutputTokens) AS OutTok,
    sum(CacheReadTokens) AS CrTok, sum(CacheCreationTokens) AS CcTok,
    max(RootSpanName) AS RootName, max(RootServiceName) AS RootService, max(RootStatusCode) AS RootStatus,
    groupUniqArrayArray(Services) AS Svcs, groupUniqArrayArray(Models) AS Mdls,
    max(Feature) AS TraceFeature, max(UserId) AS TraceUser, max(TenantId) AS TraceTenant,
    max(SessionId) AS TraceSession
FROM {self.summary_table}
{_and_where(where, page_ids)}
GROUP BY TraceId
HAVING {having_sql}
ORDER BY StartNs DESC, TraceId DESC
LIMIT {{limit:UInt32}}"""
        rows = await self._query(sql, params)
        traces = []
        for r in rows[:limit]:
            (
                tid,
                start,
                end,
                spans,
                errors,
                calls,
                cost,
                in_tok,
                out_tok,
                cr_tok,
                cc_tok,
                root_name,
                root_service,
                root_status,
                svcs,
                mdls,
                feature,
                user_id,
                tenant,
                session,
            ) = r
            traces.append(
                {
                    "trace_id": tid,
                    "start_ns": int(start),
                    "end_ns": int(end),
                    "duration_ns": max(0, int(end) - int(start)),
                    "root_name": _none_if_empty(root_name),
                    "root_service": _none_if_empty(root_service),
                    "status": _trace_status(int(errors), root_status),
                    "spans": int(spans),
                    "errors": int(errors),
                    "llm_calls": int(calls),
                    "cost_usd": cost,
                    "input_tokens": int(in_tok),
                    "output_tokens": int(out_tok),
                    "cache_read_tokens": int(cr_tok),
                    "cache_creation_tokens": int(cc_tok),
                    "services": sorted(svcs),
                    "models": sorted(mdls),
                    "user_id": _none_if_empty(user_id),
                    "feature": _none_if_empty(feature),
                    "tenant_id": _none_if_empty(tenant),
                    "session_id": _none_if_empty(session),
                }
            )
        nxt = None
        if len(rows) > limit and traces:
            last = traces[-1]
            nxt = encode_cursor(last["start_ns"], last["trace_id"])
        return {"traces": traces, "next": nxt}

    # --- deletion --------------------------------------------------------------------

    def _command(self, sql: str, params: dict[str, Any]) -> None:
        if self._client is None:
            self._client = self._client_factory()
        # Lightweight DELETE, waited for: the rows are gone for every reader when this returns.
        self._client.command(sql, parameters=params, settings={"lightweight_deletes_sync": 2, "mutations_sync": 2})

    async def forget(self, request: Any) -> dict[str, int]:
        """Delete what a `pipeline.deletion.ForgetRequest` names from the spans and summary tables;
        returns the spans and traces (summaries) removed. A user's traces go whole: every trace with a
        span whose UserId is the user."""
        params: dict[str, Any] = {"v": request.value}
        only = ""
        if request.tenant is not None and request.kind != "tenant":
            params["tenant"] = request.tenant
            only = " AND TenantId = {tenant:String}"
        if request.kind == "tenant":
            where = "TenantId = {v:String}"
        elif request.kind == "trace":
            where = "TraceId = {v:String}" + only
        else:
            rows = await self._query(
                f"SELECT DISTINCT TraceId FROM {self.spans_table} WHERE UserId = {{v:String}}{only}", params
            )
            params["ids"] = [r[0] for r in rows]
            where = "TraceId IN {ids:Array(String)}" + only
        counts = await self._query(
            f"SELECT (SELECT count() FROM {self.spans_table} WHERE {where}),"
            f" (SELECT uniqExact(TraceId) FROM {self.summary_table} WHERE {where})",
            params,
        )
        spans, traces = (int(counts[0][0]), int(counts[0][1])) if counts else (0, 0)
        loop = asyncio.get_running_loop()
        for table, n in ((self.summary_table, traces), (self.spans_table, spans)):
            if n:
                await loop.run_in_executor(self._executor, self._command, f"DELETE FROM {table} WHERE {where}", params)
        return {"spans": spans, "trace_summaries": traces}

    # --- spend -----------------------------------------------------------------------

    async def cost_by(
        self, by: str = "model", since: str | None = "24h", *, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Spend per group, most expensive first. `since` None means all stored data; `tenant`
        limits it to that tenant's spans (None: every tenant)."""
        if by not in COST_DIMENSIONS:
            raise ValueError(f"by: must be one of {', '.join(COST_DIMENSIONS)}")
        cutoff = self._cutoff(since)
        params: dict[str, Any] = {"cutoff": cutoff if cutoff is not None else 0}
        span_tenant = trace_tenant = ""
        candidates = ["Start >= fromUnixTimestamp64Nano({cutoff:Int64})"] if cutoff is not None else []
        if tenant is not None:
            params["tenant"] = tenant
            span_tenant = " AND TenantId = {tenant:String}"
            trace_tenant = " AND max(TenantId) = {tenant:String}"
            candidates.append("TenantId = {tenant:String}")
        rows_of = " AND TenantId = {tenant:String}" if tenant is not None else ""
        if by in _SPAN_GROUP_EXPR:
            sql = f"""
SELECT {_SPAN_GROUP_EXPR[by]} AS Grp, sum(CostUsd) AS Cost,
    sum(InputTokens), sum(OutputTokens), sum(CacheReadTokens), sum(CacheCreationTokens),
    count() AS Calls, uniqExact(TraceId), quantiles(0.5, 0.95)(Duration) AS Q,
    countIf(CostUsd IS NULL) AS Unpriced
FROM {self.spans_table}
WHERE (RequestModel != '' OR ResponseModel != '')
    AND Timestamp >= fromUnixTimestamp64Nano({{cutoff:Int64}}){span_tenant}
GROUP BY Grp
ORDER BY Cost DESC NULLS LAST, Calls DESC, Grp"""
        else:
            sql = f"""
SELECT Grp, sum(Cost) AS TotalCost, sum(InTok), sum(OutTok), sum(CrTok), sum(CcTok),
    sum(Calls) AS TotalCalls, count(), quantiles(0.5, 0.95)(DurNs) AS Q, sumIf(Calls, Cost IS NULL) AS Unpriced
FROM (
    SELECT TraceId, {_TRACE_GROUP_EXPR[by]} AS Grp, sum(CostUsd) AS Cost,
        sum(InputTokens) AS InTok, sum(OutputTokens) AS OutTok,
        sum(CacheReadTokens) AS CrTok, sum(CacheCreationTokens) AS CcTok, sum(LlmCalls) AS Calls,
        toUnixTimestamp64Nano(min(Start)) AS StartNs, toUnixTimestamp64Nano(max(End)) - StartNs AS DurNs
    FROM {self.summary_table}
    {self._candidates(candidates)}{rows_of}
    GROUP BY TraceId
    HAVING StartNs >= {{cutoff:Int64}}{trace_tenant}
)
GROUP BY Grp
ORDER BY TotalCost DESC NULLS LAST, TotalCalls DESC, Grp"""
        rows = await self._query(sql, params)
        out = []
        for grp, cost, in_tok, out_tok, cr_tok, cc_tok, calls, traces, q, unpriced in rows:
            out.append(
                {
                    "group": _none_if_empty(grp),
                    "cost_usd": cost,
                    "input_tokens": int(in_tok),
                    "output_tokens": int(out_tok),
                    "cache_read_tokens": int(cr_tok),
                    "cache_creation_tokens": int(cc_tok),
                    "calls": int(calls),
                    "traces": int(traces),
                    # LLM calls without a price, left out of cost_usd (by span dimensions: each call;
                    # by user/feature/tenant/...: the calls of traces with no priced call at all).
                    "unpriced_calls": int(unpriced or 0),
                    "p50_ms": float(q[0]) / 1e6 if q else None,
                    "p95_ms": float(q[1]) / 1e6 if q else None,
                }
            )
        return out
