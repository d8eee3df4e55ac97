"""The `alerts:` section: where alert events go besides the API and /metrics.

```yaml
alerts:
  webhooks:
    - url: ${SLACK_WEBHOOK_URL}     # Slack incoming webhook (or any HTTP endpoint)
      format: slack                 # slack: {"text", "blocks"}; json: the event itself
      min_severity: warning
    - url: https://ops.example.com/hooks/tracepipe
      format: json
      timeout: 5s
      max_retries: 5
  history: 500                      # resolved/fired events kept for GET /api/alerts?state=all
  persist: true                     # embedded: history and active alerts survive a restart
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.anomaly.config import Duration, Severity
from pipeline.component import ComponentConfig


class WebhookConfig(ComponentConfig):
    url: str = Field(..., min_length=1, description="http(s) URL to POST each alert event to; ${ENV} is expanded.")
    name: str | None = Field(None, description="Name in metrics and logs (default webhook/<index>).")
    format: Literal["slack", "json"] = Field(
        "json", description='slack: Slack-compatible {"text", "blocks"}; json: the alert event as is.'
    )
    timeout: Duration = Field(5.0, gt=0, description="Seconds one POST attempt may take.")
    max_retries: int = Field(5, ge=0, description="Retries after the first attempt (5xx, 429, timeouts, errors).")
    initial_backoff: Duration = Field(0.5, gt=0, description="First retry delay; doubles per retry, with jitter.")
    max_backoff: Duration = Field(30.0, gt=0, description="Longest delay between retries.")
    queue_size: int = Field(1000, gt=0, description="Events waiting for delivery; when full the oldest is dropped.")
    min_severity: Severity = Field("info", description="Only events at least this severe are sent.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers (e.g. Authorization).")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class AlertsConfig(ComponentConfig):
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="Webhook notifiers.")
    queue_size: int = Field(10_000, gt=0, description="Events the router holds for its publishers and notifiers.")
    history: int = Field(500, gt=0, description="Recent events kept in memory for GET /api/alerts?state=all.")
    max_active: int = Field(1000, gt=0, description="Active alerts tracked at most (oldest forgotten beyond).")
    persist: bool = Field(
        True,
        description="Embedded runtime: keep the active alerts and the history in <data_dir>/alerts/alerts.jsonl "
        "(bounded, rewritten when it passes twice history + max_active lines) so they survive a restart.",
    )
