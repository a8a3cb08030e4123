"""Goals: a campaign that sets one buys its clicks or conversions at the lowest cost, within its budget.

A campaign without a goal maximises value (:func:`common.engine.bidding.decide`, unchanged). With
``goal: {"metric": "clicks" | "conversions", "target": N}`` the objective becomes the goal:

- **Cheapest first.** A bid's last click costs the bid itself (docs/market.md: a won auction pays its
  price, at most the bid), so the cheapest way to buy ``N`` units over a flight bids one marginal cost
  per unit everywhere: the same bid ``level`` on every platform and tick for clicks, ``level * cvr``
  for conversions (as value bidding does, with the level set by the goal instead of the budget).
  Each tick solves for the lowest level whose expected units over the rest of the flight cover what
  the goal still needs, plus a margin, and bids it; solving again every tick against what was actually
  achieved is the feedback, as for the budget.
- **Within the budget.** The level is never above the one whose expected spend fits the budget left
  (:func:`~common.engine.pacing.budget_alpha`). When that level falls short, the campaign buys the most
  units the budget can, and the projection says so from the first tick, with the shortfall.
- **Only what the goal needs.** Bids may pass the click value (the advertiser asked for the units),
  never ``max_bid``; a conversions goal keeps ``target_cpa`` as an average (as without a goal), a
  clicks goal as a ceiling on each click's marginal cost per expected conversion. Once the goal is
  met the campaign stops bidding: the rest of the budget is not spent (docs/engine.md argues why).

Pure like the rest of the engine: functions of the state and the forecasts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.engine import bidding
from common.engine.bidding import DEFAULT_TUNING, Tuning
from common.engine.pacing import Auction, Lane, budget_alpha, cpa_alpha, outcome, updated_bias
from common.engine.state import CampaignState, Decision, GoalProgress, NoBid, PacingState
from common.forecast.forecasts import Forecasts
from common.models import CampaignGoal, GoalMetric

_DUST = 1e-9
_LEVEL_STEPS = 48  # bisection steps in log(level) over _LEVEL_SPAN: a relative precision of 1e-12
_LEVEL_SPAN = 40.0


@dataclass(frozen=True, slots=True)
class GoalTuning:
    """``margin``: plan for this share more units than the goal still needs, so that forecast error
    leaves the goal met rather than just missed (the feedback closes the rest, and the campaign stops
    once the goal is met, so the margin costs only a slightly higher level). ``reach``: the highest
    bid on a platform is its median price this many price sigmas up, where it wins all but a
    negligible share of the auctions (4: all but 0.003 %); higher bids buy nothing more."""

    margin: float = 0.02
    reach: float = 4.0


DEFAULT_GOAL_TUNING = GoalTuning()


def decide(
    state: CampaignState,
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    aggressiveness: float = 1.0,
    tuning: Tuning = DEFAULT_TUNING,
    goal_tuning: GoalTuning = DEFAULT_GOAL_TUNING,
) -> Decision:
    """Bids of one campaign for ``state.tick``: the value engine's without a goal, the goal's plan with one."""
    goal = state.spec.goal
    if goal is None:
        return bidding.decide(state, forecasts, sigmas, aggressiveness, tuning)
    spec, pacing = state.spec, state.pacing
    bias = pacing.bias
    if tuning.bias_rate > 0 and pacing.tick == state.tick - 1 and pacing.expected > _DUST:
        bias = updated_bias(bias, pacing.expected, state.spent - pacing.spent, tuning.bias_rate)
    idle = PacingState(lam=pacing.lam, bias=bias, tick=state.tick, spent=state.spent, expected=0.0)
    achieved = achieved_of(goal, state.clicks, state.conversions)
    standing = GoalProgress(goal.metric, goal.target, achieved, achieved)  # nothing more to come

    if achieved >= goal.target:
        return Decision((), idle, NoBid.GOAL_MET, goal=standing)
    if spec.end_tick is None and state.ticks_left is None:
        return Decision((), idle, NoBid.NO_FLIGHT_END, goal=standing)
    ticks_left = state.flight_ticks_left
    if not spec.in_flight(state.tick) or ticks_left <= 0:
        return Decision((), idle, NoBid.OUTSIDE_FLIGHT, goal=standing)
    if state.remaining <= _DUST:
        return Decision((), idle, NoBid.BUDGET_SPENT, goal=standing)
    options = goal_options(state, forecasts, sigmas, ticks_left, tuning, goal_tuning)
    if not options:
        return Decision((), idle, NoBid.NO_FORECAST, goal=standing)

    lanes = [o.lane for o in options]
    top = max(o.lane.auction.bid_cap / o.lane.auction.cvr for o in options)
    vpc = spec.value_per_conversion
    guess = vpc / (1 + pacing.lam) if pacing.lam > -1 else top
    affordable = budget_alpha(lanes, state.remaining / bias, top, guess)
    need = (goal.target - achieved + goal_tuning.margin * goal.target) / bias
    level = min(lowest_level(lanes, need, top), affordable)
    cpa_binds = False
    if spec.target_cpa is not None and goal.metric is GoalMetric.CONVERSIONS and tuning.respect_target_cpa:
        level, cpa_binds = cpa_alpha(lanes, level, spec.target_cpa, state.spent, state.conversions)
    progress = GoalProgress(goal.metric, goal.target, achieved, achieved + bias * units(lanes, level))
    return bidding.decision_at(options, level, state, pacing.lam, bias, vpc, tuning, cpa_binds, progress)


def achieved_of(goal: CampaignGoal, clicks: float, conversions: float) -> float:
    return clicks if goal.metric is GoalMetric.CLICKS else conversions


def goal_options(
    state: CampaignState,
    forecasts: Forecasts,
    sigmas: Mapping[str, float],
    ticks_left: int,
    tuning: Tuning,
    goal_tuning: GoalTuning,
) -> list[bidding._Option]:
    """The campaign's platforms as lanes whose unit is the goal's: an auction's ``cvr`` is the units
    one click brings (1 for clicks, the conversion rate for conversions), so that the value engine's
    ``level * cvr`` bids, spend and outcome formulas serve the goal unchanged."""
    spec = state.spec
    assert spec.goal is not None
    clicks = spec.goal.metric is GoalMetric.CLICKS
    max_bid = spec.max_bid if spec.max_bid is not None else math.inf
    out = []
    for pid, share in spec.platforms.items():
        f = forecasts.platforms.get(pid)
        sigma = sigmas.get(pid)
        if share <= 0 or f is None or sigma is None or not sigma > 0 or not bidding._usable(f):
            continue
        nxt, sd = f.next, f.log_sd
        unit = 1.0 if clicks else nxt.cvr
        if unit <= 0:
            continue
        cap = min(max_bid, nxt.cpc * math.exp(goal_tuning.reach * sigma))
        if clicks and spec.target_cpa is not None:
            cap = min(cap, spec.target_cpa * nxt.cvr)
        if not cap > 0:
            continue
        auction = Auction.of(share * nxt.volume, nxt.cpc, sigma, unit, cap)
        ticks = f.outlook.ticks(ticks_left) if f.outlook is not None else float(ticks_left)
        if not f.up:
            ticks = max(ticks - 1.0, 0.0)
        lane = Lane(auction, ticks)
        out.append(bidding._Option(pid, lane, f.up, bidding._known(sd.volume), bidding._known(sd.cpc), (lane,)))
    return out


def units(lanes: Sequence[Lane], level: float) -> float:
    """Expected goal units over the rest of the flight at ``level`` (the lanes' ``cvr`` is the unit rate)."""
    return outcome(lanes, level)[2]


def lowest_level(lanes: Sequence[Lane], need: float, top: float) -> float:
    """The lowest level ``<= top`` whose expected units cover ``need``; ``top`` when none does."""
    if need <= 0:
        return 0.0
    hi = math.log(top)
    if units(lanes, top) <= need:
        return top
    lo = hi - _LEVEL_SPAN
    if units(lanes, math.exp(lo)) >= need:
        return math.exp(lo)
    for _ in range(_LEVEL_STEPS):
        mid = (lo + hi) / 2
        if units(lanes, math.exp(mid)) >= need:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)
