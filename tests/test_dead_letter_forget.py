"""Forgetting inside dead-letter entries: the OTLP requests they hold lose exactly the named spans."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.config import build_config
from pipeline.dead_letter.forget import DEAD_LETTER_FILE, prune
from pipeline.deletion import ForgetRequest, Forgetter, store_hooks
from pipeline.services import Services
from tests.otlp_support import kv, pb_span

T1, T2, T3 = (n.to_bytes(16, "big") for n in (1, 2, 3))


def _request(tenant: str | None, spans: list) -> ExportTraceServiceRequest:  # type: ignore[type-arg]
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "bot"))
    if tenant:
        rs.resource.attributes.append(kv("tenant.id", tenant))
    rs.scope_spans.add().spans.extend(spans)
    return req


def _span(i: int, trace: bytes, user: str | None = None):  # type: ignore[no-untyped-def]
    s = pb_span(i, trace_id=trace, attrs=0)
    if user:
        s.attributes.append(kv("user.id", user))
    return s


def _acme() -> ExportTraceServiceRequest:
    # T1: a user span and its root without user; T2: another user's trace.
    return _request("acme", [_span(1, T1), _span(2, T1, "u1"), _span(3, T2, "u2")])


def test_a_users_traces_leave_the_request_whole_and_only_in_scope() -> None:
    req = _acme()
    assert prune(req, ForgetRequest("user", "u1", "globex")) == (0, 3)  # another tenant's u1
    assert prune(req, ForgetRequest("user", "u1")) == (2, 1)
    assert [s.trace_id for s in req.resource_spans[0].scope_spans[0].spans] == [T2]
    assert prune(req, ForgetRequest("trace", T2.hex())) == (1, 0) and len(req.resource_spans) == 0
    default = _request(None, [_span(4, T3, "u1")])
    assert prune(default, ForgetRequest("tenant", "acme")) == (0, 1)
    assert prune(default, ForgetRequest("tenant", "default")) == (1, 0)


async def test_forget_rewrites_and_deletes_entries_of_the_real_store(tmp_path: Path) -> None:
    store_mod = pytest.importorskip("pipeline.dead_letter.store")
    from pipeline.dead_letter import DeadLetter

    store = store_mod.LocalDeadLetterStore.under(tmp_path)
    assert store.path == tmp_path / DEAD_LETTER_FILE
    ids = []
    for req in (_acme(), _request("globex", [_span(5, T3, "u1")])):
        ids.append(store.add(DeadLetter(request=req.SerializeToString(), spans=3, reason="rejected",
                                        component="clickhouse", pipeline="traces", error="x", batch_id="b",
                                        at=time.time())))
    store.close_sync()
    config = build_config({"sinks": {"clickhouse": {}}, "service": {"data_dir": str(tmp_path),
                                                                     "pipelines": {"p": {"sinks": ["clickhouse"]}}}})
    forgetter = Forgetter()
    for name, hook in store_hooks(config, Services()):
        forgetter.register(name, hook)
    result = await forgetter.forget(ForgetRequest("user", "u1", "acme"))
    assert result.removed["dead_letters"] == {"entries": 0, "spans": 2}
    entry = store.get(ids[0])
    left = ExportTraceServiceRequest.FromString(entry.request)
    assert entry.spans == 1 and [s.trace_id for s in left.resource_spans[0].scope_spans[0].spans] == [T2]
    result = await forgetter.forget(ForgetRequest("tenant", "globex"))
    assert result.removed["dead_letters"] == {"entries": 1, "spans": 1}
    assert store.get(ids[1]) is None and store.get(ids[0]) is not None
    store.close_sync()
