"""Who is calling: the identity an authenticated request carries through tracepipe.

Produced by the shared server auth (pipeline/auth/) for every listener and read by the
receivers (to stamp the tenant) and the query API (to scope every query to it).
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("ingest", "read", "admin")


@dataclass(frozen=True)
class Principal:
    token_id: str  # first 12 hex digits of the token's SHA-256: safe to log and audit
    tenant: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or self.is_admin

    @property
    def tenant_filter(self) -> str | None:
        """The tenant every query must be limited to; None for admin (sees every tenant)."""
        return None if self.is_admin else self.tenant


# Requests on a listener without `auth` (loopback by default): full rights, no tenant stamping.
ANONYMOUS = Principal(token_id="anonymous", tenant="default", scopes=frozenset(SCOPES))
