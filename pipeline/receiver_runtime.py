"""ReceiverRuntime: the distributed receiver role — stateless OTLP receivers in front of Kafka.

The same OTLP/gRPC and OTLP/HTTP receivers as the embedded runtime, bound to a
`KafkaRequestTransport` instead of the in-process queue: a request is answered with
success only after Kafka acknowledged every trace of it; when Kafka is slow or down the
client gets the retryable OTLP codes. No chain runs here; scale by starting more.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pipeline.api import ApiContext
from pipeline.auth.setup import listener_auth_factory
from pipeline.config import Config
from pipeline.embedded import Endpoints
from pipeline.http_servers import RunningServer, start_service_servers
from pipeline.receivers import build_receivers, record_endpoints
from pipeline.telemetry import Telemetry
from pipeline.transport.kafka_common import ensure_topics
from pipeline.transport.kafka_producer import KafkaRequestTransport

log = logging.getLogger("tracepipe.receiver")


class ReceiverRuntime:
    def __init__(self, config: Config, telemetry: Telemetry | None = None) -> None:
        if config.transport.type != "kafka":
            raise ValueError("the receiver role needs transport.type: kafka")
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.transport = KafkaRequestTransport(config.transport.kafka, self.telemetry)
        from pipeline.transport.kafka_logs import KafkaLogsTransport  # OTLP logs -> logs_topic

        self.logs_transport = KafkaLogsTransport(config.transport.kafka, self.telemetry)
        self.receivers: list[Any] = []
        self.servers: list[RunningServer] = []
        self.endpoints = Endpoints()
        self._stopping = False

    async def start(self) -> Endpoints:
        k = self.config.transport.kafka
        await ensure_topics(k, {k.topic: k.partitions, k.logs_topic: k.partitions})
        await self.transport.start()
        try:
            await self.logs_transport.start()
            await self._start_servers()
            self.receivers = build_receivers(self.config, self.transport, self.telemetry, logs=self.logs_transport)
            for r in self.receivers:
                await r.start()
        except BaseException:
            await self.stop()
            raise
        record_endpoints(self.receivers, self.endpoints)
        return self.endpoints

    async def _start_servers(self) -> None:
        svc = self.config.service
        ctx = ApiContext(
            telemetry=self.telemetry,
            liveness={"receiver": lambda: (not self._stopping, "running" if not self._stopping else "stopping")},
            readiness={"kafka": self.transport.status},
        )
        for kind, where in (await start_service_servers(svc, ctx, self.telemetry, self.servers,
            listener_auth_factory(self.config, self.telemetry))).items():
            setattr(self.endpoints, kind, where)

    async def stop(self) -> None:
        """Stop the receivers, wait for in-flight produces (bounded), close the producer."""
        if self._stopping:
            return
        self._stopping = True
        for r in self.receivers:
            with contextlib.suppress(Exception):
                await r.stop()
        await self.transport.close()
        await self.logs_transport.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
