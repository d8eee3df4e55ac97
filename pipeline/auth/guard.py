"""One listener's authentication: the verifier (or none), its failures counted and logged.

`tracepipe_auth_failures_total{listener,reason}` counts refusals (reason: missing,
malformed, invalid, forbidden). Log lines name the listener, the reason and, for a
known token lacking a scope, the token's configured id: never the token.
"""

from __future__ import annotations

import logging

from pipeline.auth.principal import ANONYMOUS, Principal
from pipeline.auth.tokens import Failure, TokenVerifier
from pipeline.telemetry import Telemetry

log = logging.getLogger("tracepipe.auth")

# Who calls an open path (/healthz) on a listener with auth on, without a valid token: no rights.
UNAUTHENTICATED = Principal(token_id="unauthenticated", tenant="", scopes=frozenset())


class ListenerAuth:
    """Checks requests of one listener (`otlp/grpc`, `api`, ...). verifier None: auth off, ANONYMOUS."""

    def __init__(self, listener: str, verifier: TokenVerifier | None, telemetry: Telemetry | None) -> None:
        self.listener = listener
        self.verifier = verifier
        self._failures = telemetry.auth_failures if telemetry is not None else None

    @property
    def enabled(self) -> bool:
        return self.verifier is not None

    def check(self, authorization: str | None, scope: str) -> Principal | Failure:
        if self.verifier is None:
            return ANONYMOUS
        result = self.verifier.check(authorization, scope)
        if isinstance(result, Failure):
            if self._failures is not None:
                self._failures.labels(self.listener, result.reason).inc()
            log.debug("%s: refused a request: %s", self.listener, result.reason)
        return result

    def identify(self, authorization: str | None) -> Principal:
        """The caller of an open path: its Principal when the token is valid, else UNAUTHENTICATED."""
        if self.verifier is None:
            return ANONYMOUS
        if authorization:
            kind, _, token = authorization.strip().partition(" ")
            if kind.lower() == "bearer" and token.strip():
                found = self.verifier.lookup(token.strip())
                if found is not None:
                    return found
        return UNAUTHENTICATED
