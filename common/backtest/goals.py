"""Goal attainment of a backtest: goals met, against what the hindsight plan says was reachable.

A goal counts as reachable when the cheapest plan that reaches it, knowing the future
(:func:`common.backtest.hindsight.goal_plan`), fits the campaign's budget; the figure that matters is
the share of reachable goals the engine met. Goals beyond the budget are reported too: the engine
should have said so early (``at risk``) and bought what the budget could.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from common.backtest.hindsight import goal_plan
from common.engine.state import GOAL_TOLERANCE
from common.market.scenario import Scenario


@dataclass(frozen=True)
class GoalResult:
    campaign: str
    metric: str
    target: float
    achieved: float
    met: bool
    reachable: bool
    spend: float
    budget: float
    hindsight_cost: float  # what the cheapest plan spends to reach the target (inf: the market lacks it)
    hindsight_capacity: float  # the most units the budget buys in hindsight

    @property
    def cost_ratio(self) -> float | None:
        """Spend against the cheapest plan's, for a reachable goal that was met."""
        return self.spend / self.hindsight_cost if self.met and self.reachable and self.hindsight_cost > 0 else None


@dataclass
class GoalReport:
    results: list[GoalResult] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        reachable = [r for r in self.results if r.reachable]
        met = [r for r in reachable if r.met]
        ratios = sorted(x for r in met if (x := r.cost_ratio) is not None)
        beyond = [r for r in self.results if not r.reachable]
        return {
            "goals": len(self.results),
            "reachable": len(reachable),
            "reachable_met": len(met),
            "reachable_met_share": len(met) / len(reachable) if reachable else None,
            # Spend of a met goal against the cheapest plan's: 1 is the hindsight optimum.
            "cost_ratio_median": ratios[len(ratios) // 2] if ratios else None,
            "unreachable": len(beyond),
            # What a goal beyond the budget got, against the most the budget could buy in hindsight.
            "unreachable_attainment": (
                sum(r.achieved for r in beyond) / sum(r.hindsight_capacity for r in beyond)
                if beyond and sum(r.hindsight_capacity for r in beyond) > 0
                else None
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        rows = [{**asdict(r), "hindsight_cost": _finite(r.hindsight_cost)} for r in self.results]
        return {**self.totals(), "per_campaign": rows}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def goal_report(scenario: Scenario, outcomes: dict[str, tuple[float, float, float]]) -> GoalReport | None:
    """Each goal of ``scenario`` against ``outcomes`` (campaign -> spend, clicks, conversions); None when
    no campaign has a goal."""
    report = GoalReport()
    for spec in scenario.campaigns:
        plan = goal_plan(spec, scenario)
        if plan is None:
            continue
        spend, clicks, conversions = outcomes.get(spec.id, (0.0, 0.0, 0.0))
        achieved = clicks if plan.metric.value == "clicks" else conversions
        met = achieved >= plan.target * (1 - GOAL_TOLERANCE)
        row = (spec.id, plan.metric.value, plan.target, achieved, met, plan.reachable, spend, spec.budget)
        report.results.append(GoalResult(*row, plan.cost, plan.capacity))
    return report if report.results else None
