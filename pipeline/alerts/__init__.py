"""The alert path: processors raise alert events, the router fans them out.

processor --ctx.emit_event--> AlertRouter.publish (non-blocking)
    -> AlertStore (GET /api/alerts, `tracepipe alerts`)
    -> Prometheus tracepipe_alerts_active / tracepipe_alerts_total
    -> notifiers (WebhookNotifier: Slack or JSON, retries, bounded queue)
    -> publishers (distributed: the `tracepipe.alerts` and `tracepipe.events.<kind>` Kafka topics)
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.alerts.config import AlertsConfig, WebhookConfig
from pipeline.alerts.router import AlertRouter, Publisher
from pipeline.alerts.store import AlertStore
from pipeline.telemetry import Telemetry

__all__ = ["AlertRouter", "AlertStore", "AlertsConfig", "Publisher", "WebhookConfig", "start_router"]


async def start_router(
    config: AlertsConfig | None, telemetry: Telemetry, publishers: Sequence[Publisher] = ()
) -> AlertRouter:
    """Build the router of a runtime from the `alerts:` section and start its tasks."""
    router = AlertRouter.from_config(config, telemetry, publishers)
    await router.start()
    return router
