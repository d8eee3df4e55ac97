"""Transports carry OTLP export requests from receivers to workers.

Receivers only need `offer`: the embedded MemoryTransport and the Kafka producer
transport both implement it, answering whether the data was accepted, so the receiver
can answer its client (success only after the transport accepted).
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.transport.memory import Offer

__all__ = ["Offer", "RequestTransport"]


class RequestTransport(Protocol):
    async def offer(self, request: ExportTraceServiceRequest, spans: int, timeout: float = 0.0) -> Offer:
        """Accept the request (all of it) or refuse it with a reason; never drop part of it."""
        ...

    def ready(self) -> bool:
        """Whether the transport can currently accept data (for /readyz)."""
        ...
