"""When to spend: the expected spend of a bid level over the rest of a flight, and the level that fits the budget.

Bids are ``alpha * cvr`` on every platform, where ``alpha = value_per_conversion / (1 + lambda)``
is what the campaign pays at the margin for one expected conversion. The hindsight optimum is one
constant ``alpha`` per campaign; online, every tick solves

    sum over platforms of ticks_p * expected_spend_p(alpha) = remaining budget

where each platform's rest of the flight is a few *lanes*: stretches of ticks (the next tick, then
1-16 ticks ahead and the rest), each with its CPC, CVR and volume along the path the
forecast expects (:mod:`common.forecast.base`: a long-run base with the platform's cycle, and the
part of today's deviation from it that the platform's own history says lasts). ``expected_spend``
is docs/market.md's expected cost at a lane's figures and ``ticks`` its volume in ticks of the next
tick's (a busy evening ahead counts for more than its ticks), none this tick if the platform is
down. Without a path (too little history) a platform is one lane at this tick's forecast, its
volume moved along its cycle (:mod:`common.forecast.season`). If even ``alpha =
value_per_conversion`` (lambda = 0) does not spend the budget, it does not bind. Solving again every
tick against the budget actually left is the feedback: spending less than planned raises ``alpha``
(catch-up), spending more lowers it.

Scalar ``math`` over a few lanes a platform: a decision costs tens of microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

_SQRT1_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_MIN_LOG_ALPHA = -60.0  # below this a bid wins nothing anyway


def ncdf(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z * _SQRT1_2)


class Auction(NamedTuple):
    """One platform at one tick's figures, as far as one campaign is concerned.

    ``volume`` is the campaign's share of the clicks, ``mu`` the log of the median price,
    ``bid_cap`` the highest bid the campaign places there and ``mean_cost`` the cost of winning
    every auction, ``volume * exp(mu + sigma^2 / 2)``.
    """

    volume: float
    mu: float
    sigma: float
    cvr: float
    bid_cap: float
    mean_cost: float

    @classmethod
    def of(cls, volume: float, cpc: float, sigma: float, cvr: float, bid_cap: float) -> Auction:
        mu = math.log(cpc)
        return cls(volume, mu, sigma, cvr, bid_cap, volume * math.exp(mu + sigma * sigma / 2))

    def bid(self, alpha: float) -> float:
        return min(alpha * self.cvr, self.bid_cap)

    def cost(self, bid: float) -> float:
        """Expected cost of ``bid`` without a spend cap (docs/market.md)."""
        if bid <= 0 or self.mean_cost <= 0:
            return 0.0
        return self.mean_cost * ncdf((math.log(bid) - self.mu) / self.sigma - self.sigma)

    def clicks(self, bid: float) -> float:
        if bid <= 0 or self.volume <= 0:
            return 0.0
        return self.volume * ncdf((math.log(bid) - self.mu) / self.sigma)


class Lane(NamedTuple):
    """A platform over the rest of the flight: its auction and how many ticks it is expected to serve."""

    auction: Auction
    ticks: float


def spend(lanes: Sequence[Lane], alpha: float) -> tuple[float, float]:
    """Expected spend over the rest of the flight at ``alpha`` and its derivative in ``log(alpha)``."""
    total = slope = 0.0
    for auction, ticks in lanes:
        raw = alpha * auction.cvr
        bid = min(raw, auction.bid_cap)
        # A bid cap of 0 (a conversion rate so small that value per click underflows) buys nothing.
        if bid <= 0 or auction.mean_cost <= 0:
            continue
        sigma = auction.sigma
        z = (math.log(bid) - auction.mu) / sigma - sigma
        weight = ticks * auction.mean_cost
        total += weight * 0.5 * math.erfc(-z * _SQRT1_2)
        if raw < auction.bid_cap:
            slope += weight * math.exp(-0.5 * z * z) * _INV_SQRT_2PI / sigma
    return total, slope


def outcome(lanes: Sequence[Lane], alpha: float) -> tuple[float, float, float]:
    """Expected spend, clicks and conversions over the rest of the flight at ``alpha``."""
    cost = clicks = conversions = 0.0
    for auction, ticks in lanes:
        bid = auction.bid(alpha)
        c = ticks * auction.clicks(bid)
        cost += ticks * auction.cost(bid)
        clicks += c
        conversions += c * auction.cvr
    return cost, clicks, conversions


def budget_alpha(lanes: Sequence[Lane], budget: float, alpha_max: float, guess: float) -> float:
    """The largest ``alpha <= alpha_max`` whose expected spend fits ``budget`` (to a relative 1e-6).

    Safeguarded Newton in ``log(alpha)`` started from ``guess`` (the last tick's level), so a tick
    usually costs two or three evaluations of the spend.
    """
    if budget <= 0 or alpha_max <= 0:
        return 0.0
    hi = math.log(alpha_max)
    if spend(lanes, alpha_max)[0] <= budget:
        return alpha_max
    lo = -math.inf  # the highest level known to fit
    u = min(math.log(guess), hi) if guess > 0 else hi
    for _ in range(200):
        total, slope = spend(lanes, math.exp(u))
        gap = total - budget
        if abs(gap) <= 1e-6 * budget:
            return math.exp(u)
        if gap > 0:
            hi = u
        else:
            lo = u
        if hi - lo < 1e-9 or u < _MIN_LOG_ALPHA:
            break
        step = u - gap / slope if slope > 0 else math.nan
        if lo < step < hi:
            u = step
        elif lo == -math.inf:
            u = hi - 2.0  # no level known to fit yet: search downwards
        else:
            u = (lo + hi) / 2
    return math.exp(lo) if lo > -math.inf else math.exp(u)


def cpa_alpha(
    lanes: Sequence[Lane], alpha: float, target_cpa: float, spent: float, conversions: float
) -> tuple[float, bool]:
    """Lower ``alpha`` until the expected cost per conversion over the whole flight meets ``target_cpa``.

    The marginal cost of a conversion is ``alpha`` itself, so the flight's expected average cost
    per conversion falls as ``alpha`` falls towards ``target_cpa`` and no lower level helps: the
    answer lies in ``[target_cpa, alpha]``. Returns the level and whether the target bound.
    """
    if alpha <= target_cpa:
        return alpha, False

    def excess(a: float) -> float:
        cost, _, conv = outcome(lanes, a)
        return spent + cost - target_cpa * (conversions + conv)

    high = excess(alpha)
    if high <= 0:
        return alpha, False
    low = excess(target_cpa)
    if low > 0:
        return target_cpa, True
    # Illinois (regula falsi) in log(alpha), keeping a level that meets the target as ``lo``.
    lo, hi = math.log(target_cpa), math.log(alpha)
    side = 0
    for _ in range(40):
        u = (lo * high - hi * low) / (high - low)
        value = excess(math.exp(u))
        if value > 0:
            hi, high = u, value
            if side > 0:
                low /= 2
            side = 1
        else:
            lo, low = u, value
            if side < 0:
                high /= 2
            side = -1
        if hi - lo < 1e-6 or abs(value) <= 1e-6 * (spent + 1.0):
            break
    return math.exp(lo), True


def updated_bias(bias: float, expected: float, realised: float, rate: float) -> float:
    """Smoothed realised/expected spend ratio (in logs, each step clipped), kept within [0.5, 2]."""
    if expected <= 0:
        return bias
    ratio = max(realised, 0.0) / expected
    step = max(-1.0, min(1.0, math.log(max(ratio, 1e-6)) - math.log(bias)))
    return min(2.0, max(0.5, math.exp(math.log(bias) + rate * step)))
