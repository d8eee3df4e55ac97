"""Tenant stamping: the ingest token's tenant, written into the request the receiver forwards.

Every ResourceSpans gets the resource attribute `tenant.id` = the token's tenant (any
value the client put there is replaced), and every span-level `tenant.id` attribute is
removed: the client's claim never survives. The stamp is in the request bytes, so the
embedded queue and Kafka (`tracepipe receiver` -> `tracepipe worker`) carry it alike.
"""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TENANT_KEY = "tenant.id"


def _drop_key(attributes, key: str) -> None:  # type: ignore[no-untyped-def]
    doomed = [i for i, kv in enumerate(attributes) if kv.key == key]
    for i in reversed(doomed):
        del attributes[i]


def stamp_tenant(request: ExportTraceServiceRequest, tenant: str) -> None:
    """Set resource `tenant.id` = `tenant` on every ResourceSpans; drop span-level `tenant.id`."""
    for rs in request.resource_spans:
        attrs = rs.resource.attributes
        _drop_key(attrs, TENANT_KEY)
        kv = attrs.add()
        kv.key = TENANT_KEY
        kv.value.string_value = tenant
        for ss in rs.scope_spans:
            for span in ss.spans:
                for kv in span.attributes:
                    if kv.key == TENANT_KEY:
                        _drop_key(span.attributes, TENANT_KEY)
                        break
