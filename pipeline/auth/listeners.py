"""Config-load rules for every listener (receivers, service.api, service.metrics).

- a non-loopback endpoint without auth is an error naming the YAML path, unless the
  listener (or the `auth:` section) says `allow_unauthenticated: true`; /metrics is
  exempt (it carries no span data and is off-auth by default for Prometheus);
- `auth: true` on a listener needs a top-level `auth:` section;
- `tls` files must load; gRPC cannot enforce `min_version: "1.3"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.auth.config import AuthConfig
from pipeline.server_config import ServerConfig, is_loopback


def listeners(receivers: Mapping[str, Any], service: Any) -> list[tuple[str, str, ServerConfig]]:
    """(YAML path, kind, ServerConfig) of every configured listener with an endpoint."""
    from pipeline.receivers import RECEIVER_FACTORIES

    out: list[tuple[str, str, ServerConfig]] = []
    for rid, spec in receivers.items():
        factory = RECEIVER_FACTORIES.get(spec.type)
        if factory is None:
            continue
        try:
            subs = factory.servers(spec.config)
        except AttributeError:  # a config that failed validation (model_construct)
            continue
        for sub, server in subs:
            out.append((f"receivers.{rid}.{sub}", sub, server))
    for name in ("api", "metrics"):
        server = getattr(service, name, None)
        if server is not None and server.endpoint:
            out.append((f"service.{name}", name, server))
    return out


def check_listeners(receivers: Mapping[str, Any], service: Any, auth: AuthConfig | None,
                    errors: list[str]) -> None:
    from pipeline.auth.tls import check_files
    from pipeline.config import parse_endpoint

    configured = auth is not None
    allow_all = bool(auth and auth.allow_unauthenticated)
    for path, kind, server in listeners(receivers, service):
        if server.auth is True and not configured:
            errors.append(f"{path}.auth: true needs a top-level `auth:` section with tokens")
        if server.tls is not None:
            check_files(server.tls, f"{path}.tls", errors)
            if kind == "grpc" and server.tls.min_version == "1.3":
                errors.append(f"{path}.tls.min_version: gRPC listeners accept TLS 1.2 and 1.3 and cannot "
                              "refuse 1.2; use \"1.2\" here")
        if kind == "metrics" or not server.endpoint or server.auth_enabled(configured):
            continue
        host = parse_endpoint(server.endpoint)[0]
        if is_loopback(host) or server.allow_unauthenticated or allow_all:
            continue
        errors.append(
            f"{path}.endpoint: {server.endpoint} is reachable from other hosts but has no auth; add a "
            f"top-level `auth:` section with tokens (tracepipe token create), or set "
            f"{path}.allow_unauthenticated: true to accept anyone who can reach it"
        )
