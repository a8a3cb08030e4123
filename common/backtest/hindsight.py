"""The hindsight optimum of docs/market.md: the best any engine could have done, knowing the future.

For one campaign, bidding ``min(max_bid, w / (1 + lambda))`` on every platform and tick of its
flight, with no spend cap, is optimal for the smallest ``lambda >= 0`` whose total cost fits the
budget (a fractional knapsack over price levels). Reports and the Pareto plot measure against it.

For a goal the same knapsack runs the other way: one price per unit everywhere (``level`` per click,
``level * cvr`` per platform and tick for conversions), the lowest that buys the target; the goal is
reachable when that costs no more than the budget (:func:`goal_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import CampaignSpec, FloatArray, GoalMetric

BISECTION_STEPS = 60


@dataclass(frozen=True)
class Optimum:
    value: float
    spend: float
    multiplier: float  # lambda


def _campaign_arrays(spec: CampaignSpec, scenario: Scenario) -> tuple[FloatArray, ...]:
    start = spec.start_tick
    end = spec.end_tick if spec.end_tick is not None else scenario.ticks
    rows = [(a, scenario.platforms[p]) for p, a in spec.platforms.items() if a > 0 and p in scenario.platforms]
    volume = np.concatenate([a * s.volume[start:end] for a, s in rows]) if rows else np.zeros(0)
    cpc = np.concatenate([s.cpc[start:end] for _, s in rows]) if rows else np.ones(0)
    cvr = np.concatenate([s.cvr[start:end] for _, s in rows]) if rows else np.zeros(0)
    sigma = np.concatenate([np.full(end - start, s.price_sigma) for _, s in rows]) if rows else np.ones(0)
    return volume, cpc, cvr, sigma


def optimum(spec: CampaignSpec, scenario: Scenario) -> Optimum:
    volume, cpc, cvr, sigma = _campaign_arrays(spec, scenario)
    vpc = spec.value_per_conversion
    cap_bid = spec.max_bid if spec.max_bid is not None else np.inf

    def at(lam: float) -> tuple[float, float]:
        bid = np.minimum(vpc * cvr / (1 + lam), cap_bid)
        cost, _, conversions, _ = outcomes(volume, cpc, sigma, cvr, vpc, bid, np.inf)
        return float(conversions.sum() * vpc), float(cost.sum())

    value, spend = at(0.0)
    if spend <= spec.budget:
        return Optimum(value, spend, 0.0)
    lo, hi = 0.0, 1.0
    while at(hi)[1] > spec.budget and hi < 1e12:
        lo, hi = hi, hi * 2
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if at(mid)[1] > spec.budget:
            lo = mid
        else:
            hi = mid
    value, spend = at(hi)
    return Optimum(value, spend, hi)


# The hindsight's highest bid for a goal: the median price this many sigmas up wins all but 1e-9 of
# the auctions, so higher bids change nothing.
_GOAL_REACH_SIGMAS = 6.0
_GOAL_LEVEL_SPAN = 40.0


@dataclass(frozen=True)
class GoalPlan:
    """The cheapest way to reach a campaign's goal, knowing the future (docs/engine.md, Goals).

    ``cost`` is what the cheapest plan spends to reach ``target`` (infinite when the market does not
    hold that many units at any price the campaign may bid), ``capacity`` the most units the budget
    buys, and ``reachable`` whether the cheapest plan fits the budget (and, for conversions, the
    campaign's ``target_cpa``).
    """

    metric: GoalMetric
    target: float
    cost: float
    capacity: float
    reachable: bool


class _GoalMarket:
    """A campaign's flight, every platform and tick, with the bids of a goal's level."""

    def __init__(self, spec: CampaignSpec, scenario: Scenario, metric: GoalMetric) -> None:
        self.volume, self.cpc, self.cvr, self.sigma = _campaign_arrays(spec, scenario)
        self.vpc = spec.value_per_conversion
        self.clicks = metric is GoalMetric.CLICKS
        self.unit = np.ones_like(self.cvr) if self.clicks else self.cvr
        cap = np.full_like(self.cvr, spec.max_bid if spec.max_bid is not None else np.inf)
        if self.clicks and spec.target_cpa is not None:
            cap = np.minimum(cap, spec.target_cpa * self.cvr)  # as the engine: a ceiling per click
        self.cap = cap
        live = (self.unit > 0) & (self.volume > 0) & (cap > 0)
        top = self.cpc * np.exp(_GOAL_REACH_SIGMAS * self.sigma) / np.where(live, self.unit, 1.0)
        self.top = float(top[live].max()) if live.any() else 0.0

    def at(self, level: float) -> tuple[float, float]:
        """Cost and units of bidding ``level`` per unit everywhere."""
        bid = np.minimum(level * self.unit, self.cap)
        cost, clicks, conversions, _ = outcomes(self.volume, self.cpc, self.sigma, self.cvr, self.vpc, bid, np.inf)
        return float(cost.sum()), float((clicks if self.clicks else conversions).sum())

    def lowest(self, fits: Callable[[float, float], bool]) -> float:
        """The lowest level where ``fits(cost, units)`` holds, for a ``fits`` that holds from some level up."""
        hi = np.log(self.top)
        lo = hi - _GOAL_LEVEL_SPAN
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            if fits(*self.at(float(np.exp(mid)))):
                hi = mid
            else:
                lo = mid
        return float(np.exp(hi))


def goal_capacity(spec: CampaignSpec, scenario: Scenario, metric: GoalMetric) -> float:
    """The most ``metric`` units ``spec``'s budget buys over its flight, bought cheapest first."""
    market = _GoalMarket(spec, scenario, metric)
    if market.top <= 0:
        return 0.0
    cost, units = market.at(market.top)
    if cost <= spec.budget:
        return units
    # The highest level that fits the budget: the lowest that does not, approached from above.
    level = market.lowest(lambda c, _u: c > spec.budget)
    return market.at(level * (1 - 1e-9))[1]


def goal_plan(spec: CampaignSpec, scenario: Scenario) -> GoalPlan | None:
    """The cheapest way to reach ``spec``'s goal in hindsight; None without a goal."""
    goal = spec.goal
    if goal is None:
        return None
    market = _GoalMarket(spec, scenario, goal.metric)
    capacity = goal_capacity(spec, scenario, goal.metric)
    if market.top <= 0 or market.at(market.top)[1] < goal.target:
        return GoalPlan(goal.metric, goal.target, math.inf, capacity, False)
    level = market.lowest(lambda _c, u: u >= goal.target)
    cost = market.at(level)[0]
    within = cost <= spec.budget
    if spec.target_cpa is not None and goal.metric is GoalMetric.CONVERSIONS:
        within = within and cost <= spec.target_cpa * goal.target
    return GoalPlan(goal.metric, goal.target, cost, capacity, within)
