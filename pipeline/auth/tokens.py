"""Bearer tokens: verification in constant time, and new random tokens.

A token is checked by hashing it (SHA-256) and comparing the digest with every configured
digest using `hmac.compare_digest`, all of them each time, so neither the match nor its
position leaks through timing. Only digests are kept; the token itself is never stored
or logged (a Principal carries the first 12 hex digits of the digest as `token_id`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.auth.config import TokenEntry
from pipeline.auth.principal import Principal

TOKEN_PREFIX = "tp_"
MAX_TOKEN_CHARS = 512


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """`tp_` + 32 random bytes, URL-safe base64 (from the `secrets` module)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Failure:
    """Why a request was refused; `reason` is the metric label, `status` 401 or 403."""

    reason: str  # missing | malformed | invalid | forbidden
    message: str

    @property
    def status(self) -> int:
        return 403 if self.reason == "forbidden" else 401


class TokenVerifier:
    """The configured tokens, by digest."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries: list[tuple[bytes, Principal, str]] = []
        for e in entries:
            principal = Principal(token_id=e.sha256[:12], tenant=e.tenant, scopes=frozenset(e.scopes))
            self._entries.append((bytes.fromhex(e.sha256), principal, e.id or e.sha256[:12]))

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: Principal | None = None
        for known, principal, _name in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def name_of(self, principal: Principal) -> str:
        """The configured `id` of the token (for logs), else its token_id."""
        for _d, p, name in self._entries:
            if p is principal:
                return name
        return principal.token_id

    def check(self, authorization: str | None, scope: str) -> Principal | Failure:
        """Principal for an `Authorization` header value that carries a valid token allowing
        `scope`, else the Failure (missing, malformed, invalid, forbidden)."""
        if not authorization:
            return Failure("missing", "missing bearer token (send Authorization: Bearer <token>)")
        kind, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            return Failure("malformed", "malformed Authorization header (expected: Bearer <token>)")
        principal = self.lookup(token)
        if principal is None:
            return Failure("invalid", "invalid bearer token")
        if not principal.allows(scope):
            return Failure("forbidden", f"this token lacks the {scope!r} scope")
        return principal
