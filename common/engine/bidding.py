"""Where and how much: one campaign's bids and spend caps for one tick.

Every listed platform with a forecast gets the bid ``min(max_bid, alpha * cvr)``, so the last
click bought on each platform costs the same per expected conversion: the tick's spend is split
across platforms by marginal value, not given to the single best one. ``alpha`` comes from the
pacing (``pacing.budget_alpha``), lowered where a target CPA binds, and never above the click
value shaded by the uncertainty of the CVR forecast (that shading is what keeps waste low when the
budget does not bind).

Spend caps are a guard rail, not the pacing: each is the expected cost at the bid times a margin
for forecast error, and together they never exceed the remaining budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from common.engine.pacing import Lane, Market, budget_alpha, cpa_alpha, outcome, updated_bias
from common.engine.state import CampaignState, Decision, Goal, NoBid, PacingState
from common.forecast import Forecasts, PlatformForecast
from common.models import Bid


@dataclass(frozen=True, slots=True)
class Tuning:
    """Constants of the strategy; the defaults are what the documented figures were measured with.

    ``shade``: bids stay below the click value by ``shade`` standard deviations of the CVR forecast
    error (in log space). ``damping``: per-tick damping of the drift extended over the rest of the
    flight (0 assumes today's figures persist, 1 extends the trend undamped), ``segments``: points
    at which the rest of the flight is evaluated. ``cap_sigmas`` and ``cap_floor``: the spend-cap
    margin over the expected cost. ``bias_rate``: how fast the realised/expected spend ratio is
    learnt (0 = never). ``respect_target_cpa``: off only to measure what the constraint costs.
    """

    shade: float = 0.5
    damping: float = 0.99
    max_drift: float = 1.0
    segments: int = 4
    spread: float = 0.0
    cap_sigmas: float = 3.0
    cap_floor: float = 1.5
    bias_rate: float = 0.05
    smoothing: float = 1.0
    smoothing_horizon: float = 1.0
    respect_target_cpa: bool = True
    min_win: float = 1e-4


DEFAULT_TUNING = Tuning()
_DUST = 1e-9  # currency amounts below this are treated as zero


@dataclass(frozen=True, slots=True)
class _Option:
    platform: str
    lane: Lane
    serving: Market  # this tick's market while the platform serves (for the cap during an outage)
    margin: float


def decide(
    state: CampaignState,
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    aggressiveness: float = 1.0,
    tuning: Tuning = DEFAULT_TUNING,
) -> Decision:
    """Bids of one campaign for ``state.tick``; pure and deterministic.

    ``forecasts`` are for ``state.tick`` (made from feed figures of earlier ticks only);
    ``sigmas`` maps platform id to its ``price_sigma``. ``aggressiveness`` scales the highest bid
    relative to the click value: above 1 buys more conversions with more waste, below 1 less.
    """
    spec, pacing = state.spec, state.pacing
    bias = pacing.bias
    if tuning.bias_rate > 0 and pacing.tick == state.tick - 1 and pacing.expected > _DUST:
        bias = updated_bias(bias, pacing.expected, state.spent - pacing.spent, tuning.bias_rate)
    idle = PacingState(lam=pacing.lam, bias=bias, tick=state.tick, spent=state.spent, expected=0.0)

    ticks_left = state.flight_ticks_left
    if not spec.in_flight(state.tick) or ticks_left <= 0:
        return Decision((), idle, NoBid.OUTSIDE_FLIGHT)
    if state.remaining <= _DUST:
        return Decision((), idle, NoBid.BUDGET_SPENT)

    vpc = spec.value_per_conversion
    max_bid = spec.max_bid if spec.max_bid is not None else math.inf
    ceiling = vpc * max(aggressiveness, 0.0)
    options = _options(spec.platforms, forecasts, sigmas, ceiling, max_bid, ticks_left, tuning)
    if not options:
        return Decision((), idle, NoBid.NO_FORECAST)

    lanes = [o.lane for o in options]
    guess = vpc / (1 + pacing.lam) if pacing.lam > -1 else ceiling
    alpha = budget_alpha(lanes, state.remaining / bias, ceiling, guess)
    if pacing.tick >= 0 and pacing.lam > -1 and tuning.smoothing < 1:
        eta = max(tuning.smoothing, min(1.0, tuning.smoothing_horizon / ticks_left))
        alpha = math.exp((1 - eta) * math.log(guess) + eta * math.log(max(alpha, 1e-12)))
    cpa_binds = False
    if spec.target_cpa is not None and tuning.respect_target_cpa:
        alpha, cpa_binds = cpa_alpha(lanes, alpha, spec.target_cpa, state.spent, state.conversions)
    lam = vpc / alpha - 1 if alpha > 0 else pacing.lam

    bids, expected = _bids(spec.id, options, alpha, state.remaining, tuning.min_win)
    new_pacing = PacingState(lam=lam, bias=bias, tick=state.tick, spent=state.spent, expected=expected)
    reach = conversions = None
    if spec.reach_goal is not None or spec.conversion_target is not None:
        _, clicks, conv = outcome(lanes, alpha)
        if spec.reach_goal is not None:
            reach = Goal(spec.reach_goal, state.clicks, state.clicks + bias * clicks)
        if spec.conversion_target is not None:
            conversions = Goal(spec.conversion_target, state.conversions, state.conversions + bias * conv)
    return Decision(
        bids,
        new_pacing,
        None if bids else NoBid.NO_VALUE,
        planned=bias * expected,
        expected=expected,
        target_cpa_binds=cpa_binds,
        reach=reach,
        conversions=conversions,
    )


def decide_many(
    states: Iterable[CampaignState],
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    aggressiveness: float = 1.0,
    tuning: Tuning = DEFAULT_TUNING,
) -> list[Decision]:
    """:func:`decide` for many campaigns sharing one tick's forecasts."""
    return [decide(s, forecasts, sigmas, aggressiveness, tuning) for s in states]


def _usable(f: PlatformForecast) -> bool:
    nxt = f.next
    return (
        math.isfinite(nxt.cpc)
        and nxt.cpc > 0
        and math.isfinite(nxt.cvr)
        and 0 <= nxt.cvr <= 1
        and math.isfinite(nxt.volume)
        and nxt.volume >= 0
    )


def _options(
    audience: Mapping[str, float],
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    ceiling: float,
    max_bid: float,
    ticks_left: int,
    tuning: Tuning,
) -> list[_Option]:
    later = _segments(ticks_left - 1, tuning)
    out = []
    for pid, share in audience.items():
        f = forecasts.platforms.get(pid)
        sigma = sigmas.get(pid)
        if share <= 0 or f is None or sigma is None or not sigma > 0 or not _usable(f):
            continue
        nxt, drift, sd = f.next, f.drift, f.log_sd
        shade = math.exp(-tuning.shade * sd.cvr) if math.isfinite(sd.cvr) else 1.0
        value_cap = ceiling * shade
        serving = Market.of(share * nxt.volume, nxt.cpc, sigma, nxt.cvr, min(max_bid, value_cap * nxt.cvr))
        markets = [serving if f.up else serving._replace(volume=0.0, mean_cost=0.0)]
        weights = [1.0]
        for reach, h, ticks in later:
            cpc = nxt.cpc * _grow(drift.cpc, reach, tuning.max_drift)
            cvr = min(1.0, nxt.cvr * _grow(drift.cvr, reach, tuning.max_drift))
            volume = share * nxt.volume * _grow(drift.volume, reach, tuning.max_drift)
            spread = tuning.spread * math.sqrt(h)
            markets.append(Market.of(volume, cpc, sigma, cvr, min(max_bid, value_cap * cvr), spread))
            weights.append(ticks)
        noise = math.hypot(_finite(sd.volume), _finite(sd.cpc))
        margin = max(tuning.cap_floor, math.exp(tuning.cap_sigmas * noise))
        out.append(_Option(pid, Lane(tuple(markets), tuple(weights)), serving, margin))
    return out


def _segments(ticks: int, tuning: Tuning) -> list[tuple[float, float, float]]:
    """Split the ticks after this one into equal segments: (damped reach of the drift at its middle, ticks)."""
    if ticks <= 0:
        return []
    # Without drift or spread every later tick looks alike: one segment is exact.
    k = max(1, min(tuning.segments, ticks)) if tuning.damping > 0 or tuning.spread > 0 else 1
    rho = tuning.damping
    out = []
    for j in range(k):
        start, end = ticks * j / k, ticks * (j + 1) / k
        h = (start + end) / 2 + 1
        reach = h if rho >= 1 else rho * (1 - rho**h) / (1 - rho)
        out.append((reach, h, end - start))
    return out


def _grow(drift: float, reach: float, limit: float) -> float:
    if not math.isfinite(drift):
        return 1.0
    return math.exp(max(-limit, min(limit, drift * reach)))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.15


def _bids(
    campaign: str, options: Sequence[_Option], alpha: float, remaining: float, min_win: float
) -> tuple[tuple[Bid, ...], float]:
    """Bids and spend caps, the caps summing to at most ``remaining``; also the expected cost."""
    platforms: list[str] = []
    bids: list[float] = []
    costs: list[float] = []  # expected cost at the bid while the platform serves
    caps: list[float] = []
    expected = 0.0
    for o in options:
        m = o.serving
        bid = m.bid(alpha)
        if bid <= 0 or m.mean_cost <= 0 or m.clicks(bid) < min_win * m.volume:
            continue
        cost = m.cost(bid)
        if cost <= _DUST:
            continue
        platforms.append(o.platform)
        bids.append(bid)
        costs.append(cost)
        caps.append(cost * o.margin)
        if o.lane.markets[0].mean_cost > 0:
            expected += cost
    if not platforms:
        return (), 0.0
    total = sum(caps)
    if total > remaining:
        # Give up margin first; only when the expected costs alone exceed the budget scale them down.
        floor = sum(costs)
        if floor < remaining:
            keep = (remaining - floor) / (total - floor)
            caps = [c + (cap - c) * keep for c, cap in zip(costs, caps, strict=True)]
        else:
            caps = [c * remaining / floor for c in costs]
        while sum(caps) > remaining:  # float sums can land a hair above
            caps = [c * (1 - 1e-12) for c in caps]
        expected = min(expected, remaining)
    out = tuple(Bid(campaign, p, b, c) for p, b, c in zip(platforms, bids, caps, strict=True) if c > 0)
    return out, expected
