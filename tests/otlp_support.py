"""Helpers for the OTLP codec and receiver tests: spans made by the real OpenTelemetry SDK,
a receiver rig on a real MemoryTransport, exact span comparison, raw request builders."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from pipeline.config import OtlpReceiverConfig
from pipeline.otlp.decode import decode_request
from pipeline.spans import Span
from pipeline.telemetry import Telemetry
from pipeline.transport.memory import MemoryTransport

LINKED_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
LINKED_SPAN = 0xB7AD6B7169203331
PROMPT = "Summarize the refund policy for annual plans. " * 80  # ~3.7 KB
COMPLETION = "Annual plans are refundable within 30 days; team seats follow the same rule. " * 30


def sdk_spans() -> list[ReadableSpan]:
    """Three finished spans from the real SDK: a server root with an event, an LLM client
    call with GenAI attributes (KB-sized prompt/completion), a link and an error status,
    and a nested internal span. Returned in end order (child first)."""
    mem = InMemorySpanExporter()
    provider = TracerProvider(
        resource=SdkResource.create({"service.name": "rag-app", "deployment.environment": "test", "pid.x": 42})
    )
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("tests.otlp", "1.2.3")
    linked = SpanContext(
        trace_id=LINKED_TRACE,
        span_id=LINKED_SPAN,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    with tracer.start_as_current_span(
        "POST /chat", kind=SpanKind.SERVER, attributes={"http.request.method": "POST", "user.id": "u-1"}
    ) as root:
        root.add_event("cache.miss", {"cache.key.count": 3, "cache.tier": "l2"})
        with tracer.start_as_current_span(
            "chat gpt-4o", kind=SpanKind.CLIENT, links=[Link(linked, {"link.reason": "retry of"})]
        ) as llm:
            llm.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 345,
                    "gen_ai.request.temperature": 0.25,
                    "gen_ai.request.stream": False,
                    "gen_ai.response.finish_reasons": ("stop", "length"),
                    "gen_ai.request.stop_sequences_count": (1, 2, 3),
                    "gen_ai.prompt": PROMPT,
                    "gen_ai.completion": COMPLETION,
                }
            )
            llm.add_event("gen_ai.choice", {"index": 0, "finish_reason": "stop"})
            with tracer.start_as_current_span("tool lookup", kind=SpanKind.INTERNAL) as tool:
                tool.set_attribute("tool.name", "search")
            llm.set_status(Status(StatusCode.ERROR, "rate limited once"))
        root.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(mem.get_finished_spans())


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def assert_same_span(got: Span, want: ReadableSpan) -> None:
    """Every field the SDK set survived OTLP encoding and decode exactly."""
    ctx = want.context
    assert got.trace_id == format(ctx.trace_id, "032x")
    assert got.span_id == format(ctx.span_id, "016x")
    assert got.parent_span_id == (format(want.parent.span_id, "016x") if want.parent else "")
    assert got.name == want.name
    assert got.kind == want.kind.value + 1  # API INTERNAL=0 .. ; OTLP SPAN_KIND_INTERNAL=1 ..
    assert got.start_ns == want.start_time and got.end_ns == want.end_time
    assert got.attributes == {k: _plain(v) for k, v in want.attributes.items()}
    assert got.status_code == want.status.status_code.value
    assert got.status_message == (want.status.description or "")
    assert got.flags & 0x100  # the SDK encoder sets SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
    assert got.resource.attributes == dict(want.resource.attributes)
    assert got.scope_name == want.instrumentation_scope.name
    assert got.scope_version == want.instrumentation_scope.version
    assert [(e.name, e.time_ns, e.attributes) for e in got.events] == [
        (e.name, e.timestamp, {k: _plain(v) for k, v in e.attributes.items()}) for e in want.events
    ]
    # (the SDK's OTLP encoder does not carry a link's trace_state; decode of it is tested on raw protobuf)
    assert [(lk.trace_id, lk.span_id, lk.attributes) for lk in got.links] == [
        (format(lk.context.trace_id, "032x"), format(lk.context.span_id, "016x"), dict(lk.attributes))
        for lk in want.links
    ]


def assert_same_spans(got: Sequence[Span], want: Sequence[ReadableSpan]) -> None:
    by_id = {s.span_id: s for s in got}
    assert len(by_id) == len(got) == len(want)
    for w in want:
        assert_same_span(by_id[format(w.context.span_id, "016x")], w)


# --- raw requests ------------------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def pb_span(
    i: int,
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    attrs: int = 2,
    name: str | None = None,
) -> PbSpan:
    sp = PbSpan(
        trace_id=trace_id if trace_id is not None else (i + 1).to_bytes(16, "big"),
        span_id=span_id if span_id is not None else (i + 1).to_bytes(8, "big"),
        parent_span_id=parent,
        name=name or f"span-{i}",
        kind=PbSpan.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_000_000_000 + i,
        end_time_unix_nano=1_700_000_001_000_000_000 + i,
    )
    sp.attributes.extend([kv(f"attr.{k}", k) for k in range(attrs)])
    return sp


def pb_request(spans: Sequence[PbSpan], service: str = "raw-app") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "raw"
    ss.spans.extend(spans)
    return req


def good_request(n: int = 3, first: int = 0) -> ExportTraceServiceRequest:
    return pb_request([pb_span(first + i) for i in range(n)])


def bad_utf8_request() -> bytes:
    """A protobuf request whose span name is not valid UTF-8 (wire format otherwise valid)."""
    data = pb_request([pb_span(0, name="NAME-MARKER")]).SerializeToString()
    assert data.count(b"NAME-MARKER") == 1
    return data.replace(b"NAME-MARKER", b"\xff\xfe" + b"X" * 9)


# --- receiver rig ------------------------------------------------------------------------


@dataclass
class Rig:
    receiver: Any
    transport: MemoryTransport
    telemetry: Telemetry
    cfg: OtlpReceiverConfig

    @property
    def port(self) -> int:
        return int(self.receiver.port)

    def metric(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(f"tracepipe_{name}_total", labels) or 0.0

    async def take_spans(self) -> list[Span]:
        """Everything queued so far, decoded, and the capacity released."""
        taken = await self.transport.take(max_spans=1_000_000, max_wait=0)
        assert taken is not None
        await self.transport.release(taken)
        return [s for item in taken.items for s in decode_request(item.request)]


@contextlib.asynccontextmanager
async def running(receiver_cls: Callable[..., Any], *, capacity: int = 10_000, **cfg: Any) -> AsyncIterator[Rig]:
    """A receiver on 127.0.0.1:0 in front of a real MemoryTransport."""
    base: dict[str, Any] = {
        "grpc": {"endpoint": "127.0.0.1:0"},
        "http": {"endpoint": "127.0.0.1:0"},
        "enqueue_timeout": 0,
        "retry_after": 1,
    }
    for key in ("grpc", "http"):
        if key in cfg:
            base[key] = {**base[key], **cfg.pop(key)}
    config = OtlpReceiverConfig.model_validate({**base, **cfg})
    telemetry = Telemetry()
    transport = MemoryTransport(capacity, telemetry)
    receiver = receiver_cls("otlp", config, transport, telemetry)
    await receiver.start()
    try:
        yield Rig(receiver, transport, telemetry, config)
    finally:
        await receiver.stop(grace=0.5)
