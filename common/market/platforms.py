"""Ad platforms as the engine sees them: bids go in, outcomes come back.

``PlatformAdapter`` is the seam for a real platform's API; ``SimulatedPlatforms`` answers with the
market model of docs/market.md on a scenario's true series.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from common.errors import BidsNotPlaced
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
        """Place the bids of one tick; return their outcomes in the same order.

        The fleet calls it once per platform and evaluation, with that platform's bids. Raise
        ``BidsNotPlaced`` only when none of the bids can have reached the platform (refused before
        sending): their grants are given back. Any other exception, or no answer within the fleet's
        time-out, means they may have been placed: their grants are charged in full by the sweeper.
        """
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


# How long a "hang" fault holds a call: past any sensible time-out, yet the thread comes back.
HANG_SECONDS = 10.0


class FaultyPlatforms:
    """An adapter with faults injected on some platforms (``CE_PLATFORM_FAULTS``), for drills and tests.

    ``raise``: an error after which nobody knows whether the bids were placed; ``refuse``:
    ``BidsNotPlaced``; ``hang``: no answer for ``HANG_SECONDS``. Other platforms go to ``inner``.
    """

    def __init__(self, inner: PlatformAdapter, faults: Mapping[str, str], hang_seconds: float = HANG_SECONDS) -> None:
        self.inner = inner
        self.faults = dict(faults)
        self.hang_seconds = hang_seconds

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        for pid in sorted({o.bid.platform for o in orders}):
            fault = self.faults.get(pid)
            if fault == "refuse":
                raise BidsNotPlaced(f"platform {pid} refused the bids of tick {tick} (injected)")
            if fault == "raise":
                raise RuntimeError(f"platform {pid} failed mid-call at tick {tick} (injected)")
            if fault == "hang":
                time.sleep(self.hang_seconds)
        return self.inner.submit(tick, orders)
