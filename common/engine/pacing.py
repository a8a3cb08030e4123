"""When to spend: the expected spend of a bid level over the rest of a flight, and the multiplier that fits it.

Bids are ``alpha * cvr`` on every platform, where ``alpha = value_per_conversion / (1 + lambda)``
is the price the campaign pays at the margin for one conversion. The hindsight optimum is one
constant ``alpha`` per campaign; online, each tick solves

    sum over the remaining ticks of expected_spend(tick, alpha) = remaining budget

with the next-tick forecast extended by each metric's damped drift (evaluated at a few points of
the rest of the flight, each standing for its share of the ticks), and
takes ``alpha = value_per_conversion`` when even that does not spend the budget. Re-solving every
tick with the budget actually left is the feedback: spending less than planned raises ``alpha``
(catch-up), spending more lowers it. All of it is scalar ``math`` over a handful of platforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

_SQRT1_2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def ncdf(z: float) -> float:
    return 0.5 * math.erfc(-z * _SQRT1_2)


class Market(NamedTuple):
    """A platform's market at one set of figures, as the spend model needs it.

    ``bid_cap`` is the highest bid the campaign would place there (max_bid, or the click value
    after shading). ``mean_cost`` is ``volume * exp(mu + sigma^2 / 2)``, the cost of winning every
    auction.
    """

    volume: float
    mu: float
    sigma: float
    cvr: float
    bid_cap: float
    mean_cost: float
    scale: float  # sigma widened by the uncertainty of log(cvr / cpc) at that time

    @classmethod
    def of(cls, volume: float, cpc: float, sigma: float, cvr: float, bid_cap: float, spread: float = 0.0) -> Market:
        mu = math.log(cpc)
        scale = math.sqrt(sigma * sigma + spread * spread)
        return cls(volume, mu, sigma, cvr, bid_cap, volume * math.exp(mu + sigma * sigma / 2), scale)

    def bid(self, alpha: float) -> float:
        return min(alpha * self.cvr, self.bid_cap)

    def cost(self, bid: float) -> float:
        if bid <= 0 or self.mean_cost <= 0:
            return 0.0
        return self.mean_cost * ncdf((math.log(bid) - self.mu - self.sigma * self.sigma) / self.scale)

    def clicks(self, bid: float) -> float:
        if bid <= 0 or self.volume <= 0:
            return 0.0
        return self.volume * ncdf((math.log(bid) - self.mu) / self.scale)


class Lane(NamedTuple):
    """One platform over the rest of a flight: its market at a few points in time and the ticks each stands for."""

    markets: tuple[Market, ...]
    weights: tuple[float, ...]


def spend(lanes: Sequence[Lane], alpha: float) -> tuple[float, float]:
    """Expected spend over the rest of the flight at ``alpha`` and its derivative in ``log(alpha)``."""
    total = slope = 0.0
    for lane in lanes:
        for market, weight in zip(lane.markets, lane.weights, strict=True):
            if market.mean_cost <= 0:
                continue
            raw = alpha * market.cvr
            if raw <= 0:
                continue
            z = (math.log(min(raw, market.bid_cap)) - market.mu - market.sigma * market.sigma) / market.scale
            total += weight * market.mean_cost * ncdf(z)
            if raw < market.bid_cap:
                slope += weight * market.mean_cost * math.exp(-z * z / 2) * _INV_SQRT_2PI / market.scale
    return total, slope


def outcome(lanes: Sequence[Lane], alpha: float) -> tuple[float, float, float]:
    """Expected spend, clicks and conversions over the rest of the flight at ``alpha``."""
    cost = clicks = conversions = 0.0
    for lane in lanes:
        for market, weight in zip(lane.markets, lane.weights, strict=True):
            bid = market.bid(alpha)
            c = market.clicks(bid)
            cost += weight * market.cost(bid)
            clicks += weight * c
            conversions += weight * c * market.cvr
    return cost, clicks, conversions


def budget_alpha(lanes: Sequence[Lane], budget: float, alpha_max: float, guess: float) -> float:
    """The largest ``alpha <= alpha_max`` whose expected spend fits ``budget`` (safeguarded Newton in log alpha)."""
    if budget <= 0 or alpha_max <= 0:
        return 0.0
    hi = math.log(alpha_max)
    total, _ = spend(lanes, alpha_max)
    if total <= budget:
        return alpha_max
    # Bracket from below, then Newton steps that fall back to bisection when they leave the bracket.
    lo = hi - 2.0
    while spend(lanes, math.exp(lo))[0] > budget:
        hi, lo = lo, lo - 4.0
        if lo < -60:
            return math.exp(lo)
    u = min(max(math.log(guess), lo), hi) if guess > 0 else (lo + hi) / 2
    for _ in range(60):
        total, slope = spend(lanes, math.exp(u))
        gap = total - budget
        if abs(gap) <= 1e-6 * budget:
            break
        if gap > 0:
            hi = u
        else:
            lo = u
        if hi - lo < 1e-9:
            break
        step = u - gap / slope if slope > 0 else math.nan
        u = step if lo < step < hi else (lo + hi) / 2
    # Return a level that does not exceed the budget in expectation.
    return math.exp(u if spend(lanes, math.exp(u))[0] <= budget * (1 + 1e-6) else lo)


def cpa_alpha(
    lanes: Sequence[Lane], alpha: float, target_cpa: float, spent: float, conversions: float
) -> tuple[float, bool]:
    """Lower ``alpha`` until the expected cost per conversion over the whole flight meets ``target_cpa``.

    The marginal cost of a conversion is ``alpha`` itself, so the flight's expected average cost
    per conversion falls as ``alpha`` falls towards ``target_cpa``, and no lower level helps: the
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
    # Regula falsi (Illinois) in log(alpha) between a level that meets the target and one that does not.
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


def updated_bias(bias: float, expected: float, realised: float, rate: float = 0.05) -> float:
    """Smoothed realised/expected spend ratio (in logs, each step clipped), kept within [0.5, 2]."""
    if expected <= 0:
        return bias
    ratio = max(realised, 0.0) / expected
    step = max(-1.0, min(1.0, math.log(max(ratio, 1e-6)) - math.log(bias)))
    return min(2.0, max(0.5, math.exp(math.log(bias) + rate * step)))
