"""The shared services of one process, handed to components and API routes as typed fields.

A runtime builds one `Services` (pipeline/runtime_support.py `build_services`), gives it to every
component through `ComponentContext.services` and to the API through `ApiContext.services`, and
closes it at shutdown after the chain. A field is None when this process does not have that
service (no budgets sink, audit off, no alert path, ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.alerts.store import AlertStore
    from pipeline.audit import AuditLog
    from pipeline.budgets.registry import BudgetRegistry
    from pipeline.dead_letter.service import DeadLetterService
    from pipeline.quality.score_writer import QualityScoreWriter

# A store's forget hook (pipeline/deletion.py): ForgetRequest -> counts of what it removed.
ForgetHook = Callable[[Any], Awaitable[dict[str, int]]]


@dataclass
class Services:
    budgets: BudgetRegistry | None = None  # live budget counters: budgets sinks write, the API reads
    audit: AuditLog | None = None  # the audit log of API reads and deletes
    alerts: AlertStore | None = None  # active and recent alerts, for the API and `forget`
    dead_letters: DeadLetterService | None = None  # the embedded dead-letter store, for the API
    quality_scores: QualityScoreWriter | None = None  # derived scores (quality processor) -> the scores table
    forget_hooks: list[tuple[str, ForgetHook]] = field(default_factory=list)  # stores `forget` reaches
    anomaly_panes: Any = None  # distributed worker: where anomaly processors publish pane contributions
    clock: Callable[[], float] | None = None  # monotonic clock of time-driven processors (tests set it)
    wall_clock: Callable[[], float] | None = None  # their wall clock
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)  # run at shutdown, in order

    async def close(self) -> None:
        """Run every closer; a failing one never keeps the others open."""
        for closer in self.closers:
            with contextlib.suppress(Exception):
                await closer()
