"""The hindsight optimum of docs/market.md: the best any engine could have done, knowing the future.

For one campaign, bidding ``min(max_bid, w / (1 + lambda))`` on every platform and tick of its
flight, with no spend cap, is optimal for the smallest ``lambda >= 0`` whose total cost fits the
budget (a fractional knapsack over price levels). Reports and the Pareto plot measure against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import CampaignSpec, FloatArray

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
