"""Forgetting in the embedded dead-letter store (`<data_dir>/dead-letter/dead-letter.sqlite`).

A dead-letter entry holds its spans as an OTLP ExportTraceServiceRequest. A forget request
removes from every entry the spans it names: a trace's spans; a user's traces (every trace of
the entry with a span whose `user.id` is the user), within the request's tenant when it has one;
or every span of a tenant (the resource `tenant.id`, else "default"). An entry left without
spans is deleted; the others are rewritten with the spans that remain. Runs in one SQLite
transaction (`BEGIN IMMEDIATE`), beside a running pipeline's store (SQLite WAL allows it).
Dead letters on the Kafka topic of distributed mode are not reachable from here: they leave
with the topic's retention.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.deletion import ForgetHook, ForgetRequest
from pipeline.services import Services
from pipeline.tenants import DEFAULT_TENANT, TENANT_ATTRIBUTE

DEAD_LETTER_FILE = Path("dead-letter") / "dead-letter.sqlite"


def _string_attr(attributes: Any, key: str) -> str | None:
    for kv in attributes:
        if kv.key == key and kv.value.WhichOneof("value") == "string_value":
            return kv.value.string_value
    return None


def _in_scope(tenant: str, req: ForgetRequest) -> bool:
    if req.kind == "tenant":
        return tenant == req.value
    return req.tenant is None or tenant == req.tenant


def prune(request: ExportTraceServiceRequest, req: ForgetRequest) -> tuple[int, int]:
    """Remove the spans `req` names from `request` in place; returns (removed, left)."""
    groups = [(rs, _string_attr(rs.resource.attributes, TENANT_ATTRIBUTE) or DEFAULT_TENANT)
              for rs in request.resource_spans]
    doomed: set[bytes] = set()  # trace ids whose spans go (within the tenant scope)
    for rs, tenant in groups:
        if not _in_scope(tenant, req):
            continue
        for ss in rs.scope_spans:
            for s in ss.spans:
                if (req.kind == "tenant" or (req.kind == "trace" and s.trace_id.hex() == req.value)
                        or (req.kind == "user" and _string_attr(s.attributes, "user.id") == req.value)):
                    doomed.add(s.trace_id)
    removed = left = 0
    for rs, tenant in groups:
        in_scope = _in_scope(tenant, req)
        for ss in list(rs.scope_spans):
            keep = [s for s in ss.spans if not (in_scope and s.trace_id in doomed)]
            removed += len(ss.spans) - len(keep)
            left += len(keep)
            if len(keep) != len(ss.spans):
                del ss.spans[:]
                ss.spans.extend(keep)
            if not ss.spans:
                rs.scope_spans.remove(ss)
        if not rs.scope_spans:
            request.resource_spans.remove(rs)
    return removed, left


def forget_dead_letters(path: Path, req: ForgetRequest) -> dict[str, int]:
    """Apply `req` to the dead-letter file at `path` (blocking); the entries deleted and spans removed."""
    if not path.exists():
        return {"entries": 0, "spans": 0}
    entries = spans = 0
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for entry_id, blob in db.execute("SELECT id, request FROM dead_letters").fetchall():
                try:
                    request = ExportTraceServiceRequest.FromString(bytes(blob))
                except DecodeError:
                    continue
                removed, left = prune(request, req)
                if not removed:
                    continue
                spans += removed
                if left == 0:
                    db.execute("DELETE FROM dead_letters WHERE id = ?", (entry_id,))
                    entries += 1
                else:
                    db.execute(
                        "UPDATE dead_letters SET request = ?, spans = ? WHERE id = ?",
                        (request.SerializeToString(), left, entry_id),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()
    return {"entries": entries, "spans": spans}


def forget_hook(config: Any, services: Services) -> tuple[str, ForgetHook] | None:
    path = Path(config.data_dir) / DEAD_LETTER_FILE

    async def hook(req: ForgetRequest) -> dict[str, int]:
        return await asyncio.to_thread(forget_dead_letters, path, req)

    return "dead_letters", hook
