"""Wiring shared by the runtimes: the query layer, the alert path and the shared services."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipeline.chain import Chain
from pipeline.config import Config
from pipeline.quality.score_writer import QualityScoreWriter
from pipeline.services import Services
from pipeline.telemetry import Telemetry


async def open_queries(config: Config, chain: Chain | None = None, services: Services | None = None) -> Any:
    """TraceQueries over the ClickHouse sink the API reads (service.query_sink, else the first).
    With `services`, the services that write through it too (the quality processor's score rows)."""
    specs = config.sinks_of_type("clickhouse")
    if not specs:
        return None
    spec = config.sinks[config.service.query_sink] if config.service.query_sink else specs[0]
    from pipeline.query.traces import TraceQueries

    queries = TraceQueries.from_sink_config(spec.config, config.data_dir)
    if services is not None:
        registry = chain.telemetry.registry if chain is not None else None  # counts the rows it drops
        services.quality_scores = QualityScoreWriter(queries, registry=registry)
        services.closers.insert(0, services.quality_scores.close)  # before the query layer closes
    return queries


class Alerts:
    """The alert path of a runtime: the router (store, gauges, webhooks, publishers) and its
    emitter for components (`ComponentContext.emit_event`)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.store = router.store

    def emit(self, kind: str, event: dict[str, Any]) -> None:
        self.router.publish(kind, event)

    async def close(self) -> None:
        await self.router.close()


ALERTS_FILE = ("alerts", "alerts.jsonl")  # under service.data_dir


def alerts_file(config: Config) -> Any:
    """Where the embedded runtime keeps its alert history (alerts.persist)."""
    return config.data_dir.joinpath(*ALERTS_FILE)


async def build_alerts(config: Config, telemetry: Telemetry, publishers: list[Any], persist: bool = False) -> Alerts:
    """The alert router from the `alerts:` section; `publishers` add destinations (Kafka topic).
    `persist` (the embedded runtime, one process per data_dir): the history survives a restart
    in alerts_file(config) unless alerts.persist is false."""
    from pipeline.alerts.router import AlertRouter

    path = alerts_file(config) if persist and (config.alerts is None or config.alerts.persist) else None
    router = AlertRouter.from_config(config.alerts, telemetry, publishers=publishers, store_path=path)
    await router.start()
    return Alerts(router)


async def build_services(config: Config, telemetry: Telemetry) -> Services:
    """The shared services this config needs (pipeline/services.py): budget store, forget hooks,
    audit log; each adds its closer."""
    services = Services()
    from pipeline.budgets.registry import build_budget_store

    budgets = build_budget_store(config)
    if budgets is not None:
        await budgets.start()
        services.budgets = budgets
        services.closers.append(budgets.close)
    from pipeline.deletion import store_hooks

    services.forget_hooks = store_hooks(config, services)  # see pipeline/deletion.py
    if config.service.audit.enabled:
        from pipeline.audit import AuditLog

        services.audit = AuditLog.from_config(config.service.audit, config.data_dir)
        services.closers.append(services.audit.close)
    return services


async def close_services_and_queries(services: Services, queries: Any) -> None:
    """At shutdown, after the chain closed: the services' closers, then the query layer; a
    failure of one never keeps the others open."""
    await services.close()
    if queries is not None and hasattr(queries, "close"):
        with contextlib.suppress(Exception):
            res = queries.close()
            if asyncio.iscoroutine(res):
                await res

