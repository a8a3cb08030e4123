"""Goals in the decision engine: the cheapest units first, only what the goal needs, a shortfall said early."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from common.engine import CampaignState, GoalStatus, NoBid, Tuning, decide
from common.engine.bidding import decide as decide_value
from common.engine.goals import GoalTuning
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.models import CampaignSpec, GoalMetric

SIGMAS = {"search": 0.4, "social": 0.55, "video": 0.3}
PLAIN = Tuning(front_load=0.0, bias_rate=0.0)


def _forecast(cpc: float, cvr: float, volume: float, up: bool = True) -> PlatformForecast:
    fig = Figures(cpc, cvr, volume)
    return PlatformForecast(ahead=(fig,) * 3, log_sd=Figures(0.05, 0.05, 0.05), up=up, observations=30)


# search: dear clicks that convert well; social: cheap clicks that convert poorly.
MARKET = Forecasts(10, {"search": _forecast(1.0, 0.05, 400.0), "social": _forecast(0.3, 0.005, 600.0)})


def _spec(goal: dict[str, object] | None = None, **changes: object) -> CampaignSpec:
    data: dict[str, object] = {
        "id": "g1",
        "budget": 2000.0,
        "value_per_conversion": 40.0,
        "platforms": {"search": 0.05, "social": 0.05},
        "start_tick": 0,
        "end_tick": 100,
        "goal": goal,
    }
    data.update(changes)
    return CampaignSpec.model_validate(data)


def _state(spec: CampaignSpec, tick: int = 10, spent: float = 0.0, **kw: float) -> CampaignState:
    return CampaignState(spec=spec, tick=tick, remaining=spec.budget - spent, spent=spent, **kw)


def _expected_units(d_bids: object, metric: GoalMetric, ticks: int = 90) -> float:
    """Units of a tick's bids under docs/market.md, times the ticks left."""
    total = 0.0
    for b in d_bids:  # type: ignore[attr-defined]
        f = MARKET.platforms[b.platform].next
        sigma = SIGMAS[b.platform]
        clicks = 0.05 * f.volume * 0.5 * math.erfc(-(math.log(b.bid) - math.log(f.cpc)) / sigma / math.sqrt(2))
        total += clicks * (1.0 if metric is GoalMetric.CLICKS else f.cvr)
    return total * ticks


def test_without_a_goal_the_engine_is_the_value_engine() -> None:
    state = _state(_spec())
    assert decide(state, MARKET, SIGMAS) == decide_value(state, MARKET, SIGMAS)


def test_a_clicks_goal_bids_one_price_everywhere_and_buys_what_it_needs_with_the_margin() -> None:
    margin = GoalTuning().margin
    d = decide(_state(_spec({"metric": "clicks", "target": 1500.0})), MARKET, SIGMAS, tuning=PLAIN)
    bids = {b.platform: b.bid for b in d.bids}
    assert set(bids) == {"search", "social"}
    assert bids["search"] == pytest.approx(bids["social"])  # the same cost for the last click everywhere
    assert _expected_units(d.bids, GoalMetric.CLICKS) == pytest.approx(1500.0 * (1 + margin), rel=1e-6)
    assert d.goal is not None and d.goal.status is GoalStatus.ON_TRACK and d.goal.shortfall == 0.0
    # Value bidding would spread the whole budget; the goal spends a fraction of it.
    assert d.expected * 90 < 0.5 * 2000.0


def test_a_conversions_goal_bids_one_price_per_conversion() -> None:
    d = decide(_state(_spec({"metric": "conversions", "target": 60.0})), MARKET, SIGMAS, tuning=PLAIN)
    per_conversion = {b.platform: b.bid / MARKET.platforms[b.platform].next.cvr for b in d.bids}
    assert per_conversion["search"] == pytest.approx(per_conversion["social"])
    assert _expected_units(d.bids, GoalMetric.CONVERSIONS) == pytest.approx(60.0 + 0.02 * 60.0, rel=1e-6)


def test_the_cheapest_clicks_go_first() -> None:
    """Clicks are bought where they are cheap: the cheap platform gives more clicks per unit spent."""
    d = decide(_state(_spec({"metric": "clicks", "target": 800.0})), MARKET, SIGMAS, tuning=PLAIN)
    value = decide_value(_state(_spec(budget=d.expected * 90)), MARKET, SIGMAS, tuning=PLAIN)
    # The same money bought by value goes to the converting platform and buys fewer clicks.
    assert _expected_units(d.bids, GoalMetric.CLICKS) > 1.2 * _expected_units(value.bids, GoalMetric.CLICKS)


def test_a_goal_beyond_the_budget_is_at_risk_from_the_first_tick_with_its_shortfall() -> None:
    spec = _spec({"metric": "conversions", "target": 500.0}, budget=300.0, start_tick=10)
    d = decide(_state(spec), MARKET, SIGMAS, tuning=PLAIN)
    assert d.goal is not None and d.goal.status is GoalStatus.AT_RISK
    assert 0 < d.goal.projected < 500.0 and d.goal.shortfall == pytest.approx(500.0 - d.goal.projected)
    # It spends the budget on the most conversions it buys: as value bidding of the same budget would.
    assert d.expected * 90 == pytest.approx(300.0, rel=1e-4)


def test_a_met_goal_stops_bidding_and_keeps_the_rest_of_the_budget() -> None:
    d = decide(_state(_spec({"metric": "clicks", "target": 100.0}), clicks=100.0, spent=80.0), MARKET, SIGMAS)
    assert d.bids == () and d.reason is NoBid.GOAL_MET
    assert d.goal is not None and d.goal.status is GoalStatus.MET and d.goal.achieved == 100.0


def test_max_bid_holds_for_a_goal() -> None:
    d = decide(_state(_spec({"metric": "clicks", "target": 20000.0}, max_bid=0.6)), MARKET, SIGMAS)
    assert d.bids and all(b.bid <= 0.6 for b in d.bids)
    assert d.goal is not None and d.goal.status is GoalStatus.AT_RISK  # 0.6 cannot buy that many


def test_a_clicks_goal_keeps_target_cpa_as_a_ceiling_per_click() -> None:
    d = decide(_state(_spec({"metric": "clicks", "target": 20000.0}, target_cpa=10.0)), MARKET, SIGMAS)
    for b in d.bids:
        assert b.bid <= 10.0 * MARKET.platforms[b.platform].next.cvr * (1 + 1e-12)


def test_a_conversions_goal_keeps_target_cpa_on_average() -> None:
    spec = _spec({"metric": "conversions", "target": 200.0}, target_cpa=18.0)
    d = decide(_state(spec), MARKET, SIGMAS, tuning=PLAIN)
    assert d.target_cpa_binds
    assert d.expected * 90 <= 18.0 * _expected_units(d.bids, GoalMetric.CONVERSIONS) * (1 + 1e-4)


@settings(max_examples=150, deadline=None)
@given(
    metric=st.sampled_from(["clicks", "conversions"]),
    target=st.floats(0.5, 1e5),
    budget=st.floats(1.0, 1e5),
    spent_share=st.floats(0.0, 0.99),
    achieved_share=st.floats(0.0, 1.5),
    tick=st.integers(0, 99),
    cpc=st.floats(0.05, 20.0),
    cvr=st.floats(0.0, 0.5),
    volume=st.floats(0.0, 5000.0),
    up=st.booleans(),
    max_bid=st.none() | st.floats(0.01, 50.0),
)
def test_goal_bids_never_break_the_rules(
    metric: str, target: float, budget: float, spent_share: float, achieved_share: float, tick: int,
    cpc: float, cvr: float, volume: float, up: bool, max_bid: float | None,
) -> None:  # fmt: skip
    spec = _spec({"metric": metric, "target": target}, budget=budget, max_bid=max_bid)
    market = Forecasts(tick, {"search": _forecast(cpc, cvr, volume, up), "social": _forecast(0.3, 0.005, 600.0)})
    achieved = target * achieved_share
    units = {"clicks": achieved} if metric == "clicks" else {"conversions": achieved}
    state = _state(spec, tick=tick, spent=budget * spent_share, **units)
    d = decide(state, market, SIGMAS)
    assume(d.goal is not None)
    assert d.goal is not None
    assert sum(b.spend_cap for b in d.bids) <= state.remaining * (1 + 1e-12)
    assert all(b.bid > 0 and math.isfinite(b.bid) and b.spend_cap > 0 for b in d.bids)
    if max_bid is not None:
        assert all(b.bid <= max_bid for b in d.bids)
    if achieved >= target:
        assert d.bids == () and d.goal.status is GoalStatus.MET
    assert math.isfinite(d.goal.projected) and d.goal.projected >= d.goal.achieved
    assert d.goal.shortfall >= 0 and (d.goal.shortfall > 0) == (d.goal.status is GoalStatus.AT_RISK)
    assert math.isfinite(d.pacing.lam)


@settings(max_examples=60, deadline=None)
@given(target=st.floats(10.0, 3000.0), budget=st.floats(50.0, 5000.0))
def test_more_goal_never_costs_less(target: float, budget: float) -> None:
    """The level is the lowest that buys the goal: a larger goal bids at least as high, until the budget binds."""
    small = decide(_state(_spec({"metric": "clicks", "target": target}, budget=budget)), MARKET, SIGMAS, tuning=PLAIN)
    large = decide(
        _state(_spec({"metric": "clicks", "target": target * 1.5}, budget=budget)), MARKET, SIGMAS, tuning=PLAIN
    )
    assert large.expected >= small.expected * (1 - 1e-9)
