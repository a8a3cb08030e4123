"""The market model of docs/market.md: what a bid wins and pays on one platform at one tick.

The formulas are the contract with the scorer, so they are written once here, vectorised, and
used by the simulated platforms, the backtests and the decision engine's expectations alike.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from common.models import FloatArray, Outcome


def outcomes(
    volume: ArrayLike,
    cpc: ArrayLike,
    sigma: ArrayLike,
    cvr: ArrayLike,
    value_per_conversion: ArrayLike,
    bid: ArrayLike,
    spend_cap: ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Cost, clicks, conversions and waste of bids; every argument broadcasts.

    ``volume`` is the clicks available to this campaign (audience multiplier times the platform's
    volume). A bid of 0, a cap of 0 or no volume wins nothing.
    """
    V, mu_src, sig, rate, vpc, b, cap = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (volume, cpc, sigma, cvr, value_per_conversion, bid, spend_cap))
    )
    active = (b > 0) & (V > 0) & (cap > 0)
    mu = np.log(mu_src)
    log_bid = np.log(np.where(active, b, 1.0))
    mean_price = np.exp(mu + sig**2 / 2)
    won = ndtr((log_bid - mu - sig**2) / sig)
    clicks_full = np.where(active, V * ndtr((log_bid - mu) / sig), 0.0)
    cost_full = np.where(active, V * mean_price * won, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        throttle = np.where(cost_full > cap, cap / np.where(cost_full > 0, cost_full, 1.0), 1.0)
    click_value = vpc * rate
    log_value = np.log(np.maximum(click_value, 1e-300))
    overpaid = np.maximum(0.0, won - ndtr((log_value - mu - sig**2) / sig))
    waste = np.where(active, throttle * V * mean_price * overpaid, 0.0)
    clicks = throttle * clicks_full
    return throttle * cost_full, clicks, clicks * rate, waste


def outcome(
    volume: float,
    cpc: float,
    sigma: float,
    cvr: float,
    value_per_conversion: float,
    bid: float,
    spend_cap: float,
) -> Outcome:
    """The outcome of a single bid."""
    cost, clicks, conversions, waste = outcomes(volume, cpc, sigma, cvr, value_per_conversion, bid, spend_cap)
    return Outcome(float(cost), float(clicks), float(conversions), float(waste))
