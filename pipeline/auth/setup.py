"""Wiring auth into a runtime: the configured tokens -> one ListenerAuth per listener."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.auth.guard import ListenerAuth
from pipeline.auth.tokens import TokenVerifier

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.server_config import ServerConfig
    from pipeline.telemetry import Telemetry


def verifier_of(config: Config) -> TokenVerifier | None:
    """The token verifier of the `auth:` section (tokens_file included), None without one."""
    if getattr(config, "auth", None) is None:
        return None
    return TokenVerifier(config.tokens)


def listener_auth_factory(config: Config, telemetry: Telemetry | None
                          ) -> Callable[[str, ServerConfig], ListenerAuth]:
    verifier = verifier_of(config)

    def make(listener: str, server: ServerConfig) -> ListenerAuth:
        on = server.auth_enabled(verifier is not None)
        return ListenerAuth(listener, verifier if on else None, telemetry)

    return make
