"""Where and how much: one campaign's bids and spend caps for one tick.

Every listed platform with a forecast gets the bid ``min(max_bid, alpha * cvr)``, so the last
click bought on each platform costs the same per expected conversion: the tick's spend is split
across platforms by marginal value, not given to the single best one. ``alpha`` comes from the
pacing (:func:`~common.engine.pacing.budget_alpha`), lowered where a target CPA binds, and never
above the click value shaded by the uncertainty of the CVR forecast, which is what keeps waste
low when the budget does not bind.

Spend caps are a guard rail, not the pacing: each is the expected cost at the bid times a margin
for forecast error, and together they never exceed the remaining budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.engine.pacing import Auction, Lane, budget_alpha, cpa_alpha, ncdf, updated_bias
from common.engine.state import CampaignState, Decision, GoalProgress, NoBid, PacingState
from common.forecast.forecasts import Forecasts, PlatformForecast
from common.models import Bid


@dataclass(frozen=True, slots=True)
class Tuning:
    """Constants of the strategy; the defaults are the ones the documented figures were measured with.

    ``shade``: the highest bid stays below the click value by this many standard deviations of
    the CVR forecast error (log space). ``front_load``: plan to spend up to this fraction more
    than the budget left, scaled by ``(alpha / click value)^2``. Money left at the end of a flight
    is value lost for good, and a campaign already bidding near its click value cannot catch up
    if its market turns poor; one bidding well below it can, so it keeps to the plan.
    ``cap_sigmas`` and ``cap_floor``: the spend cap's margin over the expected cost.
    ``bias_rate``: how fast the realised/expected spend ratio is learnt (0 = never).
    ``min_win``: platforms where the bid would win less than this share of auctions are skipped.
    ``respect_target_cpa``: off only to measure what the constraint costs.
    """

    shade: float = 0.5
    front_load: float = 0.25
    cap_sigmas: float = 3.0
    cap_floor: float = 1.5
    bias_rate: float = 0.05
    min_win: float = 1e-4
    respect_target_cpa: bool = True


DEFAULT_TUNING = Tuning()
_DUST = 1e-9  # currency amounts below this are treated as zero
_UNKNOWN_LOG_SD = 0.15
_MAX_LAM = 1e12  # keeps the pacing state finite (JSON) when the level collapses to ~0
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


# The rest of a flight is planned in stretches ending this many ticks ahead and at the flight's end:
# the next tick at its forecast, the ticks while most of a deviation lasts, then the rest. Finer
# splits (1, 4, 16, 64) and a coarser one (1) scored the same to four digits (docs/engine.md).
PLAN_BOUNDS = (1, 16)


@dataclass(frozen=True, slots=True)
class _Option:
    """A platform the campaign can bid on: ``lane`` is the next tick's auction with the ticks the
    plan gives it, and ``plan`` every lane of the rest of the flight (``lane`` alone without a path)."""

    platform: str
    lane: Lane
    up: bool
    sd_volume: float
    sd_cpc: float
    plan: tuple[Lane, ...]


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
    relative to the click value: above 1 buys more conversions with more waste, below 1 fewer.
    """
    spec, pacing = state.spec, state.pacing
    bias = pacing.bias
    if tuning.bias_rate > 0 and pacing.tick == state.tick - 1 and pacing.expected > _DUST:
        bias = updated_bias(bias, pacing.expected, state.spent - pacing.spent, tuning.bias_rate)
    idle = PacingState(lam=pacing.lam, bias=bias, tick=state.tick, spent=state.spent, expected=0.0)

    if spec.end_tick is None and state.ticks_left is None:
        return Decision((), idle, NoBid.NO_FLIGHT_END)
    ticks_left = state.flight_ticks_left
    if not spec.in_flight(state.tick) or ticks_left <= 0:
        return Decision((), idle, NoBid.OUTSIDE_FLIGHT)
    if state.remaining <= _DUST:
        return Decision((), idle, NoBid.BUDGET_SPENT)

    vpc = spec.value_per_conversion
    ceiling = vpc * max(aggressiveness, 0.0)
    max_bid = spec.max_bid if spec.max_bid is not None else math.inf
    options = _options(spec.platforms, forecasts, sigmas, ceiling, max_bid, ticks_left, tuning)
    if not options:
        return Decision((), idle, NoBid.NO_FORECAST)

    lanes = [lane for o in options for lane in o.plan]
    guess = vpc / (1 + pacing.lam) if pacing.lam > -1 else ceiling
    # Spending a little ahead of the plan hedges a market that turns poor later: near the click
    # value there is no room to catch up, well below it there is (see Tuning.front_load).
    near_value = min(1.0, guess / ceiling) if ceiling > 0 else 0.0
    target = state.remaining * (1 + tuning.front_load * near_value * near_value) / bias
    alpha = budget_alpha(lanes, target, ceiling, guess)
    cpa_binds = False
    if spec.target_cpa is not None and tuning.respect_target_cpa:
        alpha, cpa_binds = cpa_alpha(lanes, alpha, spec.target_cpa, state.spent, state.conversions)
    return decision_at(options, alpha, state, pacing.lam, bias, vpc, tuning, cpa_binds)


def decision_at(
    options: list[_Option],
    level: float,
    state: CampaignState,
    lam_before: float,
    bias: float,
    vpc: float,
    tuning: Tuning,
    cpa_binds: bool,
    goal: GoalProgress | None = None,
) -> Decision:
    """The decision of bidding at ``level`` (the price of a click) on ``options``, with its pacing state."""
    lam = min(vpc / level - 1, _MAX_LAM) if level > 0 else lam_before
    bids, expected = _bids(state.spec.id, options, level, state.remaining, tuning)
    return Decision(
        bids,
        PacingState(lam=lam, bias=bias, tick=state.tick, spent=state.spent, expected=expected),
        None if bids else NoBid.NO_VALUE,
        planned=bias * expected,
        expected=expected,
        target_cpa_binds=cpa_binds,
        goal=goal,
    )


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


def _known(x: float) -> float:
    return x if math.isfinite(x) and x >= 0 else _UNKNOWN_LOG_SD


def _options(
    audience: Mapping[str, float],
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    ceiling: float,
    max_bid: float,
    ticks_left: int,
    tuning: Tuning,
) -> list[_Option]:
    out = []
    for pid, share in audience.items():
        f = forecasts.platforms.get(pid)
        sigma = sigmas.get(pid)
        if share <= 0 or f is None or sigma is None or not sigma > 0 or not _usable(f):
            continue
        nxt, sd = f.next, f.log_sd
        value_cap = ceiling * math.exp(-tuning.shade * _known(sd.cvr))
        volume = share * nxt.volume
        auction = Auction.of(volume, nxt.cpc, sigma, nxt.cvr, min(max_bid, value_cap * nxt.cvr))
        if f.path is not None:
            # The next tick at its forecast (none if the platform is down: it is assumed back from
            # the tick after), the rest along the path of CPC, CVR and volume.
            lane = Lane(auction, 1.0 if f.up else 0.0)
            plan = [lane]
            for chunk in f.path.chunks(PLAN_BOUNDS, ticks_left) if ticks_left > 1 else ():
                if chunk is None:
                    continue
                cpc, cvr = nxt.cpc * math.exp(chunk.log_cpc), min(1.0, nxt.cvr * math.exp(chunk.log_cvr))
                plan.append(Lane(Auction.of(volume, cpc, sigma, cvr, min(max_bid, value_cap * cvr)), chunk.ticks))
            out.append(_Option(pid, lane, f.up, _known(sd.volume), _known(sd.cpc), tuple(plan)))
            continue
        # Volume over the rest of the flight, in ticks of the next tick's; a platform in an outage
        # is assumed back from the next tick on.
        ticks = f.outlook.ticks(ticks_left) if f.outlook is not None else float(ticks_left)
        if not f.up:
            ticks = max(ticks - 1.0, 0.0)
        lane = Lane(auction, ticks)
        out.append(_Option(pid, lane, f.up, _known(sd.volume), _known(sd.cpc), (lane,)))
    return out


def _margin(z: float, tail: float, sigma: float, sd_volume: float, sd_cpc: float, tuning: Tuning) -> float:
    """Spend-cap margin over the expected cost: a few standard deviations of the cost's forecast error.

    Cost is linear in volume but, for a bid low in the price distribution, very sensitive to the
    price level: with ``tail = cdf(z)`` its elasticity to log cpc is ``1 - pdf(z) / (sigma * tail)``.
    """
    elasticity = 1 - math.exp(-0.5 * z * z) * _INV_SQRT_2PI / (sigma * tail) if tail > 1e-300 else -abs(z) / sigma
    noise = math.hypot(sd_volume, elasticity * sd_cpc)
    return max(tuning.cap_floor, math.exp(min(tuning.cap_sigmas * noise, 5.0)))


def _bids(
    campaign: str, options: Iterable[_Option], alpha: float, remaining: float, tuning: Tuning
) -> tuple[tuple[Bid, ...], float]:
    """Bids and spend caps, the caps summing to at most ``remaining``; also the expected cost.

    A platform in an outage still gets its bid, with the cap it would have while serving: if it
    comes back this tick the campaign takes part, and if not the bid costs nothing.
    """
    platforms: list[str] = []
    bids: list[float] = []
    costs: list[float] = []  # expected cost at the bid while the platform serves
    caps: list[float] = []
    expected = 0.0
    for o in options:
        m = o.lane.auction
        bid = m.bid(alpha)
        if bid <= 0 or m.mean_cost <= 0:
            continue
        win = (math.log(bid) - m.mu) / m.sigma  # share of auctions won is cdf(win)
        if ncdf(win) < tuning.min_win:
            continue
        z = win - m.sigma
        tail = ncdf(z)
        cost = m.mean_cost * tail  # docs/market.md's expected cost without a cap
        if cost <= _DUST:
            continue
        platforms.append(o.platform)
        bids.append(bid)
        costs.append(cost)
        caps.append(cost * _margin(z, tail, m.sigma, o.sd_volume, o.sd_cpc, tuning))
        if o.up:
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
