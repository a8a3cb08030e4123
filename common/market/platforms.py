"""Ad platforms as the engine sees them: bids go in, outcomes come back.

``PlatformAdapter`` is the seam for a real platform's API; ``SimulatedPlatforms`` answers with the
market model of docs/market.md on a scenario's true series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import NO_OUTCOME, Bid, CampaignSpec, Outcome


@dataclass(frozen=True, slots=True)
class Order:
    """A bid with the campaign it is placed for (a platform knows its advertisers' targeting)."""

    bid: Bid
    campaign: CampaignSpec


class PlatformAdapter(Protocol):
    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        """Place the bids of one tick; return their outcomes in the same order."""
        ...


class SimulatedPlatforms:
    """Every platform of a scenario, clearing bids with the exact docs/market.md formulas."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        simulated = [o for o in orders if o.bid.platform in self.scenario.platforms]
        if len(simulated) < len(orders):
            # A platform registered beside the simulated market (POST /platforms) has no series here:
            # nothing to win there.
            cleared = iter(self._clear(tick, simulated))
            return [next(cleared) if o.bid.platform in self.scenario.platforms else NO_OUTCOME for o in orders]
        return self._clear(tick, orders)

    def _clear(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        if not orders:
            return []
        index = tick % self.scenario.ticks
        n = len(orders)
        volume, cpc, sigma, cvr, vpc, bid, cap = (np.empty(n) for _ in range(7))
        for i, order in enumerate(orders):
            series = self.scenario.platforms[order.bid.platform]
            volume[i] = order.campaign.platforms[order.bid.platform] * series.volume[index]
            cpc[i] = series.cpc[index]
            sigma[i] = series.price_sigma
            cvr[i] = series.cvr[index]
            vpc[i] = order.campaign.value_per_conversion
            bid[i] = order.bid.bid
            cap[i] = order.bid.spend_cap
        cost, clicks, conversions, waste = outcomes(volume, cpc, sigma, cvr, vpc, bid, cap)
        return [Outcome(float(cost[i]), float(clicks[i]), float(conversions[i]), float(waste[i])) for i in range(n)]
