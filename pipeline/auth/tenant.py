"""Tenant stamping: the ingest token's tenant, written into the request the receiver forwards.

Every ResourceSpans gets the resource attribute `tenant.id` = the token's tenant (any
value the client put there is replaced), and every span-level `tenant.id` attribute is
removed: the client's claim never survives. The stamp is in the request bytes, so the
embedded queue and Kafka (`tracepipe receiver` -> `tracepipe worker`) carry it alike.

`stamp_tenant_wire` stamps the received bytes instead, when they hold no `tenant.id` at all
(nothing to replace or drop): each ResourceSpans gets one more `resource` field holding just
the attribute, which protobuf merges into its resource (appending to its attributes, as
`stamp_tenant` does). The receiver stamps its decoded request too (for such bytes that is one
append per resource: no span is scanned) and sends the stamped bytes on, so the request needs
no serialising again and no second decode.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from pipeline.otlp.wire import F1, field, resource_spans_fields, varint

TENANT_KEY = "tenant.id"


def _drop_key(attributes, key: str) -> None:  # type: ignore[no-untyped-def]
    doomed = [i for i, kv in enumerate(attributes) if kv.key == key]
    for i in reversed(doomed):
        del attributes[i]


TENANT_KEY_BYTES = TENANT_KEY.encode()


def stamp_tenant(request: ExportTraceServiceRequest, tenant: str, wire: bytes | None = None) -> None:
    """Set resource `tenant.id` = `tenant` on every ResourceSpans; drop span-level `tenant.id`.

    `wire`: the request's protobuf bytes, when the caller has them. A key is stored verbatim
    in protobuf, so when those bytes do not contain `tenant.id` no span can carry it and the
    per-span scan (the expensive part, ~5 us per span) is skipped. (Not for OTLP/JSON, whose
    keys may be escaped as \\u sequences.)"""
    scan_spans = wire is None or TENANT_KEY_BYTES in wire
    for rs in request.resource_spans:
        attrs = rs.resource.attributes
        _drop_key(attrs, TENANT_KEY)
        kv = attrs.add()
        kv.key = TENANT_KEY
        kv.value.string_value = tenant
        if not scan_spans:
            continue
        for ss in rs.scope_spans:
            for span in ss.spans:
                for kv in span.attributes:
                    if kv.key == TENANT_KEY:
                        _drop_key(span.attributes, TENANT_KEY)
                        break


def stamp_tenant_wire(wire: bytes, tenant: str) -> bytes | None:
    """The serialised request `wire` with resource `tenant.id` = `tenant` on every
    ResourceSpans (see the module doc); None when `wire` contains `tenant.id` anywhere or is
    not a plain ExportTraceServiceRequest: then decode it and use `stamp_tenant`."""
    if TENANT_KEY_BYTES in wire:
        return None
    fields = resource_spans_fields(wire)
    if fields is None:
        return None
    kv = KeyValue(key=TENANT_KEY, value=AnyValue(string_value=tenant)).SerializeToString()
    stamp = field(F1, field(F1, kv))  # ResourceSpans.resource { Resource.attributes { kv } }
    parts: list[bytes | memoryview] = []
    for f in fields:
        pos = 1  # past the tag: skip the old length
        while f[pos] & 0x80:
            pos += 1
        payload = f[pos + 1:]
        parts += [F1, varint(len(payload) + len(stamp)), payload, stamp]
    return b"".join(parts)
