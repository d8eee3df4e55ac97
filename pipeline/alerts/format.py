"""How alert events look on the wire: plain JSON, and Slack-compatible messages."""

from __future__ import annotations

from typing import Any

_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


def summary(event: dict[str, Any]) -> str:
    text = event.get("summary")
    if text:
        return str(text)
    return f"{event.get('rule', 'alert')} {event.get('state', '')}".strip()


def _num(v: Any) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def slack_message(event: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body: `text` (fallback/notification) plus Block Kit `blocks`."""
    state = event.get("state", "")
    severity = str(event.get("severity", "info"))
    icon = ":white_check_mark:" if state == "resolved" else _EMOJI.get(severity, "")
    title = f"{icon} {event.get('rule', 'alert')} {state}".strip()
    key = event.get("key") or {}
    key_text = ", ".join(f"{k}={v or '-'}" for k, v in key.items()) or "-"
    baseline = event.get("baseline") or {}
    window = event.get("window") or {}
    fields = [
        f"*Key*\n{key_text}",
        f"*Severity*\n{severity}",
        f"*{event.get('metric', 'value')}*\n{_num(event.get('observed'))}",
        f"*Baseline*\n{_num(baseline.get('mean'))}",
        f"*Threshold*\n{_num(event.get('threshold'))} ({event.get('kind', '')})",
        f"*Window*\n{window.get('start', '')} .. {window.get('end', '')}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": summary(event)[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    traces = event.get("example_trace_ids") or []
    if traces:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Traces: " + ", ".join(f"`{t}`" for t in traces)}],
            }
        )
    return {"text": f"{title}: {summary(event)}", "blocks": blocks}


def render(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    return slack_message(event) if fmt == "slack" else event
