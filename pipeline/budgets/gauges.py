"""Bounded-cardinality utilization gauges: the top-N ratios of a budget, never ids.

Each budget keeps, for its current period, the latest spend/limit ratio of the ids this
process touched (the totals come back from the store, so they include every worker's
spend). The map is capped: past `cap` entries the lowest ratios are forgotten (ratios
only grow within a period, so a forgotten id comes back with its new total). Exported:

    tracepipe_budget_utilization_ratio{budget, rank="1".."N"}   ratio of the N-th highest id
    tracepipe_budget_exceeded_ids{budget}                        ids at or over their limit
"""

from __future__ import annotations

import heapq

from pipeline.telemetry import Telemetry


class UtilizationTracker:
    def __init__(self, telemetry: Telemetry, top_n: int = 10, cap: int = 5000) -> None:
        self.telemetry = telemetry
        self.top_n = top_n
        self.cap = max(cap, 4 * top_n)
        self._period: dict[str, int] = {}
        self._ratios: dict[str, dict[str, float]] = {}
        self._dirty: set[str] = set()

    def observe(self, budget: str, period_start: int, id_: str, ratio: float) -> None:
        current = self._period.get(budget)
        if current is None or period_start > current:
            self._period[budget] = period_start
            self._ratios[budget] = {}
        elif period_start < current:
            return  # a late span of a past period
        ratios = self._ratios[budget]
        ratios[id_] = ratio
        self._dirty.add(budget)
        if len(ratios) > self.cap:
            keep = heapq.nlargest(self.cap // 2, ratios.items(), key=lambda kv: kv[1])
            self._ratios[budget] = dict(keep)

    def top(self, budget: str) -> list[float]:
        return heapq.nlargest(self.top_n, self._ratios.get(budget, {}).values())

    def export(self) -> None:
        t = self.telemetry
        for budget in self._dirty:
            top = self.top(budget)
            for rank in range(self.top_n):
                t.budget_utilization_ratio.labels(budget, str(rank + 1)).set(top[rank] if rank < len(top) else 0.0)
            exceeded = sum(1 for r in self._ratios.get(budget, {}).values() if r >= 1.0)
            t.budget_exceeded_ids.labels(budget).set(exceeded)
        self._dirty.clear()
