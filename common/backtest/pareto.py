"""The Pareto frontier of the engine's one trade-off setting, ``aggressiveness``.

Each point is a whole backtest at one setting: the value it won, what it spent and what it wasted
(paid above the clicks' value). A point is on the frontier when no other point wins at least as
much value for no more spend and no more waste.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: the frontier needs no Redis, the runner does
    from common.backtest.runner import BacktestReport


@dataclass(frozen=True)
class ParetoPoint:
    aggressiveness: float
    value: float
    spend: float
    waste: float
    efficiency: float | None

    @classmethod
    def of(cls, report: BacktestReport) -> ParetoPoint:
        """The point of one backtest, at the aggressiveness it ran with."""
        totals = report.totals()
        return cls(report.aggressiveness, totals["value"], totals["spend"], totals["waste"], totals["efficiency"])

    def dominated_by(self, other: ParetoPoint) -> bool:
        no_worse = other.value >= self.value and other.spend <= self.spend and other.waste <= self.waste
        better = other.value > self.value or other.spend < self.spend or other.waste < self.waste
        return no_worse and better


def frontier(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other point dominates, by increasing spend."""
    kept = [p for p in points if not any(p.dominated_by(q) for q in points if q is not p)]
    return sorted(kept, key=lambda p: (p.spend, p.value))
