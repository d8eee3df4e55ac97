"""Receivers: components like processors and sinks, each type exposing a `ReceiverFactory`.

A factory names the type (as used under `receivers:` in the YAML), its config model, the
listeners a config opens (each a `ServerConfig`, for the shared endpoint/TLS/auth checks)
and `create`, which builds the receivers of one configured id. Every receiver reports
where it listens (`endpoint`, after start) and its `kind` (`otlp_grpc`, `otlp_http`), so
the runtimes never guess. Both runtimes build receivers through `build_receivers` here.
To add a receiver type: write its module with a factory and list it in RECEIVER_FACTORIES.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.component import ComponentConfig

if TYPE_CHECKING:
    from pipeline.auth.guard import ListenerAuth
    from pipeline.config import Config
    from pipeline.server_config import ServerConfig
    from pipeline.telemetry import Telemetry
    from pipeline.transport import RequestTransport


@runtime_checkable
class Receiver(Protocol):
    receiver_id: str
    kind: str  # otlp_grpc | otlp_http

    @property
    def endpoint(self) -> str: ...  # HOST:PORT actually bound (after start)

    async def start(self) -> None: ...

    async def stop(self, grace: float = 5.0) -> None: ...


@dataclass
class ReceiverContext:
    """What the runtime hands a receiver factory."""

    transport: RequestTransport
    telemetry: Telemetry
    # listener name ("otlp/grpc"), its ServerConfig -> the auth that listener enforces
    auth_for: Callable[[str, ServerConfig], ListenerAuth]
    # where OTLP logs go (pipeline/receivers/otlp_signals.py LogsDestination); None: counted and dropped
    logs: Any = None

    def logger(self, receiver_id: str) -> logging.Logger:
        return logging.getLogger(f"tracepipe.receiver.{receiver_id}")


@dataclass(frozen=True)
class ReceiverFactory:
    type: str
    config_model: type[ComponentConfig]
    create: Callable[[str, Any, ReceiverContext], list[Receiver]]
    # (YAML sub-path such as "grpc", its ServerConfig) for every listener the config opens
    servers: Callable[[Any], list[tuple[str, ServerConfig]]]
    description: str = ""


def _otlp_servers(cfg: Any) -> list[tuple[str, ServerConfig]]:
    return [(key, sub) for key in ("grpc", "http") if (sub := getattr(cfg, key, None)) is not None]


def _otlp_create(receiver_id: str, cfg: Any, ctx: ReceiverContext) -> list[Receiver]:
    from pipeline.receivers.otlp_grpc import OtlpGrpcReceiver
    from pipeline.receivers.otlp_http import OtlpHttpReceiver

    out: list[Receiver] = []
    log = ctx.logger(receiver_id)
    if cfg.grpc is not None:
        auth = ctx.auth_for(f"{receiver_id}/grpc", cfg.grpc)
        out.append(OtlpGrpcReceiver(receiver_id, cfg, ctx.transport, ctx.telemetry, log, auth=auth))
    if cfg.http is not None:
        auth = ctx.auth_for(f"{receiver_id}/http", cfg.http)
        out.append(OtlpHttpReceiver(receiver_id, cfg, ctx.transport, ctx.telemetry, log, auth=auth))
    for r in out:
        r.signals_logs = ctx.logs
    return out


def _otlp_factory() -> ReceiverFactory:
    from pipeline.config import OtlpReceiverConfig

    return ReceiverFactory(
        type="otlp",
        config_model=OtlpReceiverConfig,
        create=_otlp_create,
        servers=_otlp_servers,
        description="OTLP/gRPC and OTLP/HTTP (protobuf and JSON, gzip) trace receiver.",
    )


RECEIVER_FACTORIES: dict[str, ReceiverFactory] = {f.type: f for f in (_otlp_factory(),)}


def wanted_receivers(config: Config) -> list[str]:
    """Receiver ids some pipeline without `from` takes spans from (empty list: all)."""
    wanted: set[str] = set()
    for pipe in config.service.pipelines.values():
        if pipe.source is None:
            wanted.update(pipe.receivers or config.receivers.keys())
    return [rid for rid in config.receivers if rid in wanted]


def build_receivers(config: Config, transport: RequestTransport, telemetry: Telemetry, logs: Any = None,
                    factories: Mapping[str, ReceiverFactory] | None = None) -> list[Receiver]:
    """The receivers the config declares (and some pipeline uses), bound to `transport`; their
    OTLP logs go to `logs` (a LogsDestination; None: counted and dropped)."""
    from pipeline.auth.setup import listener_auth_factory

    factories = factories or RECEIVER_FACTORIES
    ctx = ReceiverContext(transport, telemetry, listener_auth_factory(config, telemetry), logs)
    out: list[Receiver] = []
    for rid in wanted_receivers(config):
        spec = config.receivers[rid]
        out.extend(factories[spec.type].create(rid, spec.config, ctx))
    return out


def record_endpoints(receivers: Iterable[Receiver], endpoints: Any) -> None:
    """Set `endpoints.<kind>` (otlp_grpc, otlp_http) from each started receiver."""
    for r in receivers:
        setattr(endpoints, r.kind, r.endpoint)
