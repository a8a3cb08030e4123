"""Ad platforms as the engine sees them: bids go in, outcomes come back.

``PlatformAdapter`` is the seam for a real platform's API; ``SimulatedPlatforms`` answers with the
market model of docs/market.md on a scenario's true series. An adapter whose outcomes may come
after its reply (a real platform reports a tick's spend once it has counted it) returns ``PENDING``
for them and also implements ``LateOutcomes``: the fleet keeps those bids' reservations held and asks
again each tick until the outcomes arrive (common/fleet/late.py). ``CE_PLATFORM_ADAPTER`` chooses
the adapter (common/fleet/adapters.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from common.errors import BidsNotPlaced
from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import NO_OUTCOME, Bid, CampaignSpec, Outcome, PlatformFigures


@dataclass(frozen=True, slots=True)
class Order:
    """A bid with the campaign it is placed for (a platform knows its advertisers' targeting)."""

    bid: Bid
    campaign: CampaignSpec


# An outcome a platform will report later: the bid was placed, what it cost is not known yet.
PENDING = None


def idempotency_key(tick: int, bid: Bid) -> str:
    """The key a platform deduplicates one bid by: a second submit with it gets the first outcome."""
    return f"{bid.campaign}:{tick}:{bid.platform}"


class PlatformAdapter(Protocol):
    def submit(self, tick: int, orders: Sequence[Order]) -> Sequence[Outcome | None]:
        """Place the bids of one tick; return their outcomes in the same order (``PENDING`` for one to come).

        The fleet calls it once per platform and evaluation, with that platform's bids, and waits at
        most ``CE_PLATFORM_TIMEOUT_SECONDS``. Each bid has an idempotency key (``idempotency_key``):
        a real platform must treat a second submit of it as the first. Raise ``BidsNotPlaced`` only
        when none of the bids can have reached the platform (refused before sending): their grants
        are given back. Any other exception, or no answer within the time-out, means they may have
        been placed: an adapter with ``LateOutcomes`` is asked for them later, and otherwise (or if
        they never come) their grants are charged in full by the sweeper.
        """
        ...


@runtime_checkable
class LateOutcomes(Protocol):
    def collect(self, tick: int, orders: Sequence[Order]) -> Sequence[Outcome | None]:
        """The outcomes of bids placed at ``tick`` whose outcome was pending, in order; ``PENDING`` for
        those still to come. Never places a bid. Called again each tick until every one is known or
        the sweeper's grace has passed."""
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

    def submit(self, tick: int, orders: Sequence[Order]) -> Sequence[Outcome | None]:
        for pid in sorted({o.bid.platform for o in orders}):
            fault = self.faults.get(pid)
            if fault == "refuse":
                raise BidsNotPlaced(f"platform {pid} refused the bids of tick {tick} (injected)")
            if fault == "raise":
                raise RuntimeError(f"platform {pid} failed mid-call at tick {tick} (injected)")
            if fault == "hang":
                time.sleep(self.hang_seconds)
        return self.inner.submit(tick, orders)


def clear(
    figures: PlatformFigures, price_sigma: float, orders: Sequence[tuple[float, float, float, float]]
) -> list[Outcome]:
    """Outcomes of bids on one platform at one tick whose figures are ``figures``: docs/market.md's model.

    Each order is (bid, spend cap, the campaign's audience multiplier there, its value per conversion).
    """
    if not orders:
        return []
    bid, cap, audience, vpc = (np.array(column, dtype=float) for column in zip(*orders, strict=True))
    cost, clicks, conversions, waste = outcomes(
        audience * figures.volume, figures.cpc, price_sigma, figures.cvr, vpc, bid, cap
    )
    return [Outcome(float(cost[i]), float(clicks[i]), float(conversions[i]), float(waste[i])) for i in range(len(bid))]
