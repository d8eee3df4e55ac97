"""Forgetting in the replay tables: captured items copy a trace's messages, so they go with it.

A trace: the items captured from it (and their results in every run) and the results recorded
as that trace; a user: the items of every trace with a span whose UserId is the user; a tenant:
every item and result of the tenant. Within the request's tenant when it has one. Lightweight
DELETEs, waited for, as the spans' own (pipeline/query/traces.py `forget`).
"""

from __future__ import annotations

from typing import Any

from pipeline.deletion import ForgetHook, ForgetRequest
from pipeline.replay.store import ITEMS_TABLE, RESULTS_TABLE

_SYNC = {"lightweight_deletes_sync": 2, "mutations_sync": 2}


def forget_hook(queries: Any) -> ForgetHook:
    items = f"`{queries.database}`.`{ITEMS_TABLE}`"
    results = f"`{queries.database}`.`{RESULTS_TABLE}`"

    async def hook(req: ForgetRequest) -> dict[str, int]:
        params: dict[str, Any] = {"v": req.value}
        only = ""
        if req.tenant is not None and req.kind != "tenant":
            params["tenant"] = req.tenant
            only = " AND TenantId = {tenant:String}"
        if req.kind == "tenant":
            item_where = result_where = "TenantId = {v:String}"
        else:
            if req.kind == "trace":
                traces = "TraceId = {v:String}"
            else:
                traces = (f"TraceId IN (SELECT DISTINCT TraceId FROM {queries.spans_table}"
                          f" WHERE UserId = {{v:String}}{only})")
            item_where = traces + only
            result_where = (f"((TenantId, SetName, ItemId) IN (SELECT TenantId, SetName, ItemId FROM {items}"
                            f" WHERE {item_where}) OR TraceId = {{v:String}}){only}")
        counts = await queries._query(
            f"SELECT (SELECT count() FROM {items} WHERE {item_where}), (SELECT count() FROM {results} WHERE"
            f" {result_where})", params)
        n_items, n_results = (int(counts[0][0]), int(counts[0][1])) if counts else (0, 0)

        def delete(client: Any) -> None:
            if n_results:  # results first: their condition reads the items
                client.command(f"DELETE FROM {results} WHERE {result_where}", parameters=params, settings=_SYNC)
            if n_items:
                client.command(f"DELETE FROM {items} WHERE {item_where}", parameters=params, settings=_SYNC)

        if n_items or n_results:
            await queries.run_on_client(delete)
        return {"items": n_items, "results": n_results}

    return hook
