"""The tracepipe tenant of a span: who owns the data, for scoping, budgets, anomaly keys and retention.

A tenant is a tracepipe customer (whoever holds the ingest token), not the application's end
customer (that is the separate `customer` attribution dimension). It is read from the resource
attribute `tenant.id` only: with auth on, the receivers set it on every ResourceSpans from the
ingest token (and remove span-level `tenant.id`), so the client's claims never count. A span
without it belongs to `default`, the tenant of every single-tenant deployment (and of ANONYMOUS,
the principal of listeners without auth). A span-level `tenant.id` is deliberately ignored: it is
an application attribute (normalize maps `customer_id`-style metadata onto it), so honouring it
would split one operator's data by the app's end customers and let a client pick a tenant per span.
"""

from __future__ import annotations

from pipeline.spans import Resource, Span

TENANT_ATTRIBUTE = "tenant.id"
DEFAULT_TENANT = "default"
MAX_TENANT_LENGTH = 128


def tenant_of_resource(resource: Resource) -> str:
    value = resource.attributes.get(TENANT_ATTRIBUTE)
    if value.__class__ is str and value:
        return value[:MAX_TENANT_LENGTH]
    return DEFAULT_TENANT


def tenant_of(span: Span) -> str:
    """The tenant owning `span` (resource attribute `tenant.id`, else "default")."""
    return tenant_of_resource(span.resource)
