"""What operators do with dead letters: list, show, replay (the API and the CLI call this).

Replay sends an entry's spans back to where they were refused (`Chain.replay`): the sink
that refused them, alone (the sinks that acked the original batch are not written again,
so nothing is counted twice), or, for a processor's refusal, the pipeline from that
processor on. The replayed batch id is `replay-<entry id>`, so a replay repeated after a
crash is deduplicated by ClickHouse. An entry becomes `replayed` when every span was
stored; spans refused again become new entries (`replay_of` = the entry) and the entry is
marked `failed_again`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.dead_letter import DeadLetter
from pipeline.dead_letter.store import LocalDeadLetterStore
from pipeline.otlp.decode import decode_request
from pipeline.services import Services

MAX_LIST = 1000


class DeadLetterNotFound(KeyError):
    pass


def entry_detail(entry: DeadLetter) -> dict[str, Any]:
    """The entry with its spans: a short line per span and the OTLP/JSON request."""
    req = ExportTraceServiceRequest.FromString(entry.request)
    spans = [
        {"trace_id": s.trace_id, "span_id": s.span_id, "name": s.name, "service": s.service_name,
         "start_ns": s.start_ns, "end_ns": s.end_ns}
        for s in decode_request(req)
    ]
    return {**entry.summary(), "span_list": spans, "otlp": json_format.MessageToDict(req)}


class DeadLetterService:
    """List / show / replay over a local store; `chain` is the running chain (or one built
    for the CLI when no pipeline runs)."""

    def __init__(self, store: LocalDeadLetterStore, chain: Any = None) -> None:
        self.store = store
        self.chain = chain

    async def list(self, *, status: str | None = None, limit: int = 100) -> dict[str, Any]:
        limit = max(1, min(int(limit), MAX_LIST))
        entries = await self.store.run(lambda: self.store.list(status=status, limit=limit))
        counts = await self.store.run(self.store.counts)
        return {"entries": [e.summary() for e in entries], "spans_by_status": counts}

    async def show(self, entry_id: str) -> dict[str, Any]:
        entry = await self.store.run(self.store.get, entry_id)
        if entry is None:
            raise DeadLetterNotFound(entry_id)
        return entry_detail(entry)

    async def replay(self, entry_id: str) -> dict[str, Any]:
        if self.chain is None:
            raise RuntimeError("no chain to replay through in this process")
        entry = await self.store.run(self.store.get, entry_id)
        if entry is None:
            raise DeadLetterNotFound(entry_id)
        spans = decode_request(ExportTraceServiceRequest.FromString(entry.request))
        dead = await self.chain.replay(entry, spans)
        status = "replayed" if dead == 0 else "failed_again"
        await self.store.run(self.store.mark, entry_id, status)
        return {"id": entry_id, "spans": len(spans), "stored": len(spans) - dead, "dead_lettered_again": dead,
                "status": status}

    async def replay_all(self) -> dict[str, Any]:
        """Replay every entry not replayed yet (status `new`), oldest first. Entries created by
        these replays (spans refused again) are left for the next call."""
        pending = await self.store.run(lambda: self.store.list(status="new", limit=1_000_000))
        results = [await self.replay(e.id) for e in pending]
        return {"replayed": results, "entries": len(results),
                "stored": sum(r["stored"] for r in results),
                "dead_lettered_again": sum(r["dead_lettered_again"] for r in results)}


def attach_local_store(chain: Any, data_dir: Path | str, services: Services) -> LocalDeadLetterStore:
    """Embedded wiring: the chain dead-letters into `<data_dir>/dead-letter/`, the API finds
    the service in `services.dead_letters`, and the store closes with the other services."""
    store = LocalDeadLetterStore.under(data_dir)
    chain.dead_letter = store
    services.dead_letters = DeadLetterService(store, chain)
    services.closers.append(store.close)
    return store
