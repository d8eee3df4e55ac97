"""Processors: one module per processor type, each exposing a `factory`.

To add a processor: write `processors/<type>.py` with a config model and a `factory`,
then list it here. The YAML refers to it by its type name (or `type/name`).
"""

from __future__ import annotations

from typing import Any

from pipeline.component import Factory
from processors import anomaly, context, cost, normalize, quality, redact, sample

PROCESSOR_FACTORIES: dict[str, Factory[Any, Any]] = {
    f.type: f
    for f in (
        normalize.factory,
        context.factory,
        cost.factory,
        redact.factory,
        sample.factory,
        anomaly.factory,
        quality.factory,
    )
}
