"""The one server config every listener shares: OTLP gRPC, OTLP HTTP, the query API, /metrics.

    endpoint: 127.0.0.1:4317        # HOST:PORT (port 0 binds a free port)
    tls:                            # OTel Collector option names (configtls.ServerConfig)
      cert_file: /certs/tls.crt
      key_file: /certs/tls.key
      client_ca_file: /certs/ca.crt # set => clients must present a certificate signed by it (mTLS)
      min_version: "1.2"            # or "1.3"
      reload_interval: 60s          # seconds between checks for changed certificate files
    auth: true                      # use the top-level `auth:` tokens (default: on when `auth:` exists)
    allow_unauthenticated: false    # true: may bind a non-loopback address without auth

`service.metrics` defaults to `auth: false` (pipeline/config.py MetricsEndpointConfig). TLS files
must exist when the config is loaded. Runtime behaviour (TLS contexts, bearer-token checks)
lives in pipeline/auth/.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from pipeline.component import ComponentConfig

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class TlsConfig(ComponentConfig):
    cert_file: str = Field(..., description="PEM certificate (chain) the server presents.")
    key_file: str = Field(..., description="PEM private key of cert_file.")
    client_ca_file: str | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Lowest TLS version accepted.")
    reload_interval: float = Field(
        60.0, ge=0, description="Seconds between checks of the files for changes (0: check on every handshake)."
    )

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_text(cls, v: object) -> object:
        return str(v) if isinstance(v, float | int) else v


class ServerConfig(ComponentConfig):
    """Endpoint, TLS and auth of one listener."""

    endpoint: str | None = Field(None, description="HOST:PORT to listen on.")
    tls: TlsConfig | None = Field(None, description="Serve TLS (and mTLS with client_ca_file); null: plain.")
    auth: bool | None = Field(
        None, description="Require a bearer token from the top-level `auth:` section; null: on when `auth:` exists."
    )
    allow_unauthenticated: bool = Field(
        False, description="Allow a non-loopback endpoint without auth (an explicit choice, off by default)."
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None:
            from pipeline.config import parse_endpoint

            parse_endpoint(v)
        return v

    def auth_enabled(self, auth_configured: bool) -> bool:
        return auth_configured if self.auth is None else self.auth


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
