"""The embedded runtime's logs destination: OTLP log records -> redaction -> `otel_logs`.

A logs export request is stored in the request path and acknowledged only once ClickHouse
(chDB or a server) confirmed the insert, so an acknowledged record is durable. Writes go
through the clickhouse sink's own client thread (`ClickHouseSink.run_with_client`): one
writer per store. At most `logs_max_pending_requests` (sink config) requests are being
stored at once; a request that finds no free slot within the receiver's `enqueue_timeout`
is refused as FULL (429 / RESOURCE_EXHAUSTED with Retry-After), a store failure as
UNAVAILABLE (503 / UNAVAILABLE), so SDKs retry. Each insert carries a deduplication token
derived from the request's content, so a client's retry of a request that was in fact
stored is stored once (within the table's deduplication window).

Redaction: a record's body, its attributes and its resource attributes pass through the
redact processors of the trace pipeline(s) writing to the same clickhouse sink, in chain
order, with `RedactProcessor.redact_values`, before anything is stored.

Log events are joined to their spans at query time by trace and span id (see
pipeline/query/logs.py), so a log event and its span may arrive in either order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pipeline.chain import Chain
from pipeline.config import Config
from pipeline.otlp.decode import any_value, attributes
from pipeline.receivers.otlp_signals import genai_event_name
from pipeline.telemetry import Telemetry
from pipeline.transport import Offer

log = logging.getLogger("tracepipe.logs_store")

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def decode_logs(req: ExportLogsServiceRequest) -> list[Any]:
    """The request's log records as `LogRow`s (plain Python values)."""
    from sinks.clickhouse_logs import LogRow

    rows: list[LogRow] = []
    for rl in req.resource_logs:
        res_attrs = attributes(rl.resource.attributes)
        svc = res_attrs.get("service.name")
        service = svc if isinstance(svc, str) and svc else "unknown_service"
        for sl in rl.scope_logs:
            scope_attrs = attributes(sl.scope.attributes)
            for rec in sl.log_records:
                tid, sid = rec.trace_id, rec.span_id
                rows.append(
                    LogRow(
                        time_ns=rec.time_unix_nano or rec.observed_time_unix_nano,
                        trace_id=tid.hex() if len(tid) == 16 and tid != _ZERO_TRACE else "",
                        span_id=sid.hex() if len(sid) == 8 and sid != _ZERO_SPAN else "",
                        flags=rec.flags,
                        severity_text=rec.severity_text,
                        severity_number=int(rec.severity_number),
                        service=service,
                        body=any_value(rec.body) if rec.HasField("body") else None,
                        resource_schema_url=rl.schema_url,
                        resource_attributes=res_attrs,
                        scope_schema_url=sl.schema_url,
                        scope_name=sl.scope.name,
                        scope_version=sl.scope.version,
                        scope_attributes=scope_attrs,
                        attributes=attributes(rec.attributes),
                        event_name=genai_event_name(rec),
                    )
                )
    return rows


def redact_rows(rows: list[Any], redactors: list[Any]) -> None:
    """Redact, in place, each row's body and attributes, and each distinct resource's
    attributes for the redactors that scan resources (`scan_resource`)."""
    if not rows or not redactors:
        return
    resources: dict[int, dict[str, Any]] = {}
    for r in rows:
        resources.setdefault(id(r.resource_attributes), r.resource_attributes)
    old_ids = list(resources)
    res_list: list[Any] = list(resources.values())
    rest: list[Any] = []
    for r in rows:
        rest.append(r.body)
        rest.append(r.attributes)
    for proc in redactors:
        scan_resource = getattr(getattr(proc, "config", None), "scan_resource", True)
        head = res_list if scan_resource else []
        out = proc.redact_values([*head, *rest])
        if scan_resource:
            res_list = out[: len(head)]
        rest = out[len(head) :]
    new_res = {rid: new if isinstance(new, dict) else {} for rid, new in zip(old_ids, res_list, strict=True)}
    for i, r in enumerate(rows):
        r.resource_attributes = new_res[id(r.resource_attributes)]
        r.body = rest[2 * i]
        attrs = rest[2 * i + 1]
        r.attributes = attrs if isinstance(attrs, dict) else {}


def redactors_for(chain: Chain, sink_id: str) -> list[Any]:
    """The redact processors a span passes on its way to `sink_id`, in chain order."""
    from processors.redact import RedactProcessor

    by_name = {p.name: p for p in chain.pipelines}
    out: list[Any] = []
    seen: set[int] = set()
    for pipe in chain.pipelines:
        if sink_id not in pipe.sink_ids:
            continue
        path = [pipe]
        while path[0].source is not None and path[0].source in by_name and len(path) <= len(by_name):
            path.insert(0, by_name[path[0].source])
        for p in path:
            for proc in p.processors:
                if isinstance(proc, RedactProcessor) and id(proc) not in seen:
                    seen.add(id(proc))
                    out.append(proc)
    return out


class LogsStore:
    """LogsDestination writing to the logs table of a clickhouse sink (module doc)."""

    def __init__(self, sink: Any, redactors: list[Any], telemetry: Telemetry, max_pending: int) -> None:
        self.sink = sink
        self.cfg = sink.cfg
        self.redactors = redactors
        self.telemetry = telemetry
        self.table = f"{self.cfg.database}.{self.cfg.logs_table}"
        self._max_pending = max_pending
        self._pending = 0
        self._cond = asyncio.Condition()
        self._schema_ready = False
        self._closed = False

    async def start(self) -> None:
        try:
            await self._ensure_schema()
        except Exception as e:  # an unreachable server: retried on the first write
            log.warning("logs store: cannot create %s yet (%s); will retry on the first write", self.table,
                        type(e).__name__)

    async def _ensure_schema(self) -> None:
        if self._schema_ready or not self.cfg.create_schema:
            return
        from sinks.clickhouse_logs import logs_schema_statements

        def create(client: Any) -> None:
            for stmt in logs_schema_statements(self.cfg.database, self.cfg.logs_table, self.cfg.ttl_days):
                client.command(stmt)

        await self.sink.run_with_client(create)
        self._schema_ready = True

    async def offer(self, request: ExportLogsServiceRequest, records: int, timeout: float = 0.0) -> Offer:
        if self._closed:
            return Offer.CLOSED
        if not await self._acquire(timeout):
            return Offer.FULL
        try:
            return await self.store(request)
        finally:
            async with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    async def _acquire(self, timeout: float) -> bool:
        async with self._cond:
            if self._pending >= self._max_pending:
                if timeout <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._cond.wait_for(lambda: self._pending < self._max_pending), timeout)
                except TimeoutError:
                    return False
            self._pending += 1
            return True

    async def store(self, request: ExportLogsServiceRequest) -> Offer:
        """Redact and insert the request now (no slot): ACCEPTED once stored, UNAVAILABLE when the
        store failed transiently; raises when ClickHouse refused the rows themselves."""
        from sinks.clickhouse import is_bad_data
        from sinks.clickhouse_logs import log_rows_to_arrow

        token = "logs-" + hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()[:32]
        rows = decode_logs(request)
        redact_rows(rows, self.redactors)
        table = log_rows_to_arrow(rows)
        try:
            await self._ensure_schema()
            await self.sink.run_with_client(self._insert, table, token)
        except Exception as e:
            code = type(e).__name__
            if is_bad_data(e):
                log.error("logs store: ClickHouse refused %d log records (%s)", len(rows), code)
                raise
            log.warning("logs store: insert of %d log records failed (%s); the client will retry", len(rows), code)
            return Offer.UNAVAILABLE
        return Offer.ACCEPTED

    def _insert(self, client: Any, table: Any, token: str) -> None:
        client.insert_arrow(
            self.table, table, settings={"insert_deduplicate": 1, "insert_deduplication_token": token}
        )

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new requests; wait (bounded) for the ones being stored."""
        self._closed = True
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self._pending == 0), timeout)
            except TimeoutError:
                log.error("logs store: %d requests still being stored at shutdown", self._pending)


async def build_logs_store(config: Config, chain: Chain, telemetry: Telemetry) -> LogsStore | None:
    """The logs store over the clickhouse sink the API reads (service.query_sink, else the
    first clickhouse sink); None when no clickhouse sink is configured (logs are then only
    counted)."""
    specs = config.sinks_of_type("clickhouse")
    if not specs:
        return None
    sink_id = config.service.query_sink
    if not sink_id:
        sink_id = next(sid for sid, spec in config.sinks.items() if spec.type == "clickhouse")
    sink = chain.sinks.get(sink_id)
    if sink is None or not hasattr(sink, "run_with_client"):
        return None
    store = LogsStore(sink, redactors_for(chain, sink_id), telemetry, sink.cfg.logs_max_pending_requests)
    await store.start()
    return store
