"""Sinks: one module per sink type, each exposing a `factory`.

To add a sink: write `sinks/<type>.py` with a config model and a `factory`, then list
it here. The YAML refers to it by its type name (or `type/name`).
"""

from __future__ import annotations

from typing import Any

from pipeline.component import Factory
from sinks import budgets, clickhouse, prometheus

SINK_FACTORIES: dict[str, Factory[Any, Any]] = {
    f.type: f
    for f in (
        clickhouse.factory,
        prometheus.factory,
        budgets.factory,
    )
}
