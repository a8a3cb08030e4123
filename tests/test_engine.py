"""The decision engine: rules it never breaks (property-based) and the behaviour of its pacing."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from common.engine import CampaignState, Decision, NoBid, PacingState, Tuning, decide
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.models import CampaignSpec

PLATFORMS = ("search", "social", "video", "display")
SIGMAS = {"search": 0.4, "social": 0.55, "video": 0.3, "display": 0.6}


def _forecast(cpc: float, cvr: float, volume: float, up: bool = True, sd: float = 0.05) -> PlatformForecast:
    fig = Figures(cpc, cvr, volume)
    return PlatformForecast(ahead=(fig,) * 3, log_sd=Figures(sd, sd, sd), up=up, observations=30)


def _forecasts(tick: int = 10, **figures: tuple[float, float, float]) -> Forecasts:
    return Forecasts(tick, {pid: _forecast(*fig) for pid, fig in figures.items()})


MARKET = _forecasts(search=(1.0, 0.05, 400.0), social=(0.5, 0.02, 600.0), video=(0.9, 0.01, 300.0))


def _spec(**changes: object) -> CampaignSpec:
    data: dict[str, object] = {
        "id": "c1",
        "budget": 1000.0,
        "value_per_conversion": 40.0,
        "platforms": {"search": 0.05, "social": 0.05},
        "start_tick": 0,
        "end_tick": 100,
    }
    data.update(changes)
    return CampaignSpec.model_validate(data)


def _state(spec: CampaignSpec, tick: int = 10, remaining: float | None = None, **kw: object) -> CampaignState:
    left = spec.budget if remaining is None else remaining
    return CampaignState(spec=spec, tick=tick, remaining=left, spent=spec.budget - left, **kw)  # type: ignore[arg-type]


def test_bids_on_every_listed_platform_with_the_same_margin_per_conversion() -> None:
    d = decide(_state(_spec(budget=50.0)), MARKET, SIGMAS)
    assert {b.platform for b in d.bids} == {"search", "social"}
    alpha = {b.platform: b.bid / MARKET.platforms[b.platform].next.cvr for b in d.bids}
    assert alpha["search"] == pytest.approx(alpha["social"])
    assert d.lam > 0  # this budget binds
    assert d.reason is None


def test_a_binding_budget_is_paced_over_the_rest_of_the_flight() -> None:
    spec = _spec(budget=50.0)
    d = decide(_state(spec, tick=10), MARKET, SIGMAS, tuning=Tuning(front_load=0.0))
    assert d.expected * 90 == pytest.approx(50.0, rel=1e-4)  # 90 ticks left at today's figures


def test_front_load_spends_ahead_of_the_plan_most_when_bidding_near_the_click_value() -> None:
    plain, ahead = Tuning(front_load=0.0), Tuning(front_load=0.2)

    def lead(budget: float) -> float:
        # The scale comes from the last tick's level, as stored in the pacing state.
        last = decide(_state(_spec(budget=budget), tick=9), MARKET, SIGMAS, tuning=plain).pacing
        state = _state(_spec(budget=budget), tick=10, pacing=last)
        return (
            decide(state, MARKET, SIGMAS, tuning=ahead).expected / decide(state, MARKET, SIGMAS, tuning=plain).expected
        )

    tight, loose = lead(5.0), lead(60.0)
    assert 1.0 < tight < loose <= 1.2 + 1e-9


def test_a_budget_that_does_not_bind_bids_the_shaded_click_value() -> None:
    spec = _spec(budget=1e7)
    d = decide(_state(spec), MARKET, SIGMAS)
    assert d.lam == pytest.approx(0.0, abs=1e-12)
    for b in d.bids:
        value = spec.value_per_conversion * MARKET.platforms[b.platform].next.cvr
        assert b.bid == pytest.approx(value * math.exp(-0.5 * 0.05))


def test_catching_up_bids_higher_when_more_budget_is_left() -> None:
    spec = _spec(budget=200.0)
    behind = decide(_state(spec, tick=50, remaining=150.0), MARKET, SIGMAS)
    ahead = decide(_state(spec, tick=50, remaining=60.0), MARKET, SIGMAS)
    assert behind.lam < ahead.lam
    assert all(b.bid > a.bid for b, a in zip(behind.bids, ahead.bids, strict=True))


def test_max_bid_caps_every_bid() -> None:
    d = decide(_state(_spec(budget=1e6, max_bid=0.3)), MARKET, SIGMAS)
    assert d.bids and all(b.bid <= 0.3 for b in d.bids)


def test_a_target_cpa_lowers_the_bids_and_says_so() -> None:
    free = decide(_state(_spec(budget=1e6)), MARKET, SIGMAS)
    held = decide(_state(_spec(budget=1e6, target_cpa=12.0)), MARKET, SIGMAS)
    assert held.target_cpa_binds and not free.target_cpa_binds
    assert all(h.bid < f.bid for h, f in zip(held.bids, free.bids, strict=True))
    # The flight's expected cost per conversion then meets the target.
    alpha = 40.0 / (1 + held.lam)
    assert alpha >= 12.0


def test_aggressiveness_scales_the_highest_bid() -> None:
    spec = _spec(budget=1e7)
    timid = decide(_state(spec), MARKET, SIGMAS, aggressiveness=0.8)
    bold = decide(_state(spec), MARKET, SIGMAS, aggressiveness=1.2)
    assert all(b.bid == pytest.approx(t.bid * 1.5) for b, t in zip(bold.bids, timid.bids, strict=True))


def test_no_bid_outside_the_flight() -> None:
    spec = _spec(start_tick=20, end_tick=40)
    for tick in (0, 19, 40, 99):
        d = decide(_state(spec, tick=tick), MARKET, SIGMAS)
        assert d.bids == () and d.reason is NoBid.OUTSIDE_FLIGHT


def test_no_bid_without_forecasts() -> None:
    d = decide(_state(_spec()), Forecasts(10, {}), SIGMAS)
    assert d.bids == () and d.reason is NoBid.NO_FORECAST
    # Forecasts for other platforms only are as good as none.
    d = decide(_state(_spec(platforms={"display": 0.1})), MARKET, SIGMAS)
    assert d.reason is NoBid.NO_FORECAST


def test_no_bid_once_the_budget_is_spent() -> None:
    d = decide(_state(_spec(), remaining=0.0), MARKET, SIGMAS)
    assert d.bids == () and d.reason is NoBid.BUDGET_SPENT


def test_a_platform_in_an_outage_keeps_its_bid_but_not_its_share_of_the_plan() -> None:
    market = Forecasts(10, {**MARKET.platforms, "social": _forecast(0.5, 0.02, 600.0, up=False)})
    d = decide(_state(_spec(budget=50.0)), market, SIGMAS)
    assert "social" in {b.platform for b in d.bids}
    serving = decide(_state(_spec(budget=50.0)), MARKET, SIGMAS)
    # Expected spend counts only what serves now; the plan still counts on social from the next tick.
    assert 0 < d.expected < serving.expected
    assert d.lam == pytest.approx(serving.lam, rel=0.05)


def test_spend_feedback_learns_the_bias_of_the_spend_model() -> None:
    spec = _spec(budget=50.0)
    first = decide(_state(spec, tick=10), MARKET, SIGMAS)
    charged = first.expected * 1.5  # the market charged more than the model expected
    second = decide(
        _state(spec, tick=11, remaining=50.0 - charged, pacing=first.pacing), MARKET, SIGMAS, tuning=Tuning()
    )
    assert second.pacing.bias > 1.0
    assert second.planned == pytest.approx(second.expected * second.pacing.bias)


def test_pacing_state_round_trips_through_json() -> None:
    d = decide(_state(_spec(budget=50.0)), MARKET, SIGMAS)
    again = PacingState.from_dict(json.loads(json.dumps(d.pacing.to_dict())))
    assert again == d.pacing
    assert PacingState.from_dict(None) == PacingState()
    assert PacingState.from_dict({"lam": "nan"}) == PacingState()
    # Every field, in field order: what the stored JSON held when it was dataclasses.asdict's.
    assert json.dumps(d.pacing.to_dict()) == json.dumps(dataclasses.asdict(d.pacing))


def test_ticks_left_is_needed_without_an_end_tick() -> None:
    spec = _spec(end_tick=None)
    assert decide(_state(spec), MARKET, SIGMAS).reason is NoBid.NO_FLIGHT_END
    assert decide(_state(spec, ticks_left=50), MARKET, SIGMAS).bids


def test_campaigns_sharing_one_tick_s_forecasts_are_decided_independently() -> None:
    """A worker decides its group one campaign after the other on one forecasts object: each gets the
    decision it gets on forecasts of its own, whatever the order (nothing carries over between calls)."""
    states = [_state(_spec(id=f"c{i}", budget=10.0 * (i + 1), max_bid=0.5 + i / 10)) for i in range(5)]
    own = [copy.deepcopy(MARKET) for _ in states]
    alone = {s.spec.id: decide(s, f, SIGMAS) for s, f in zip(states, own, strict=True)}
    assert len({d.bids for d in alone.values()}) == len(states), "the campaigns bid differently"
    shared = copy.deepcopy(MARKET)
    for order in (states, states[::-1], states):
        assert {s.spec.id: decide(s, shared, SIGMAS) for s in order} == alone


# --- properties -------------------------------------------------------------------------------

_positive = st.floats(1e-3, 1e3, allow_nan=False)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[CampaignState, Forecasts]:
    listed = draw(st.lists(st.sampled_from(PLATFORMS), min_size=1, max_size=4, unique=True))
    audience = {p: draw(st.sampled_from([0.0, 0.001, 0.05, 1.0])) for p in listed}
    assume(any(a > 0 for a in audience.values()))
    start = draw(st.integers(0, 50))
    end = draw(st.integers(start + 1, 120))
    extra: dict[str, float] = {}
    if draw(st.booleans()):
        extra["max_bid"] = draw(_positive)
    if draw(st.booleans()):
        extra["target_cpa"] = draw(_positive)
    spec = CampaignSpec(
        id="c1",
        budget=draw(st.floats(0.01, 1e6)),
        value_per_conversion=draw(_positive),
        platforms=audience,
        start_tick=start,
        end_tick=end,
        **extra,
    )
    tick = draw(st.integers(0, 130))
    remaining = draw(st.floats(0.0, spec.budget))
    conversions = draw(st.floats(0.0, 100.0))
    pacing = PacingState(
        lam=draw(st.floats(0.0, 50.0)), bias=draw(st.floats(0.5, 2.0)), tick=tick - 1, expected=draw(_positive)
    )
    state = CampaignState(spec, tick, remaining, spec.budget - remaining, 0.0, conversions, pacing=pacing)
    known = draw(st.lists(st.sampled_from(PLATFORMS), unique=True))
    platforms = {
        p: _forecast(
            draw(st.floats(1e-3, 100.0)),
            draw(st.floats(0.0, 1.0)),
            draw(st.floats(0.0, 1e5)),
            up=draw(st.booleans()),
            sd=draw(st.one_of(st.just(math.nan), st.floats(0.0, 2.0))),
        )
        for p in known
    }
    return state, Forecasts(tick, platforms)


def _check_rules(state: CampaignState, forecasts: Forecasts, d: Decision) -> None:
    spec = state.spec
    assert sum(b.spend_cap for b in d.bids) <= state.remaining
    for b in d.bids:
        assert b.campaign == spec.id
        assert spec.platforms.get(b.platform, 0.0) > 0
        assert b.platform in forecasts.platforms
        assert math.isfinite(b.bid) and b.bid > 0
        assert math.isfinite(b.spend_cap) and b.spend_cap > 0
        if spec.max_bid is not None:
            assert b.bid <= spec.max_bid
    assert len({b.platform for b in d.bids}) == len(d.bids)
    if d.bids:
        assert spec.in_flight(state.tick)
        assert d.reason is None
    else:
        assert d.reason is not None
    json.dumps(d.pacing.to_dict(), allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(case=_cases(), aggressiveness=st.floats(0.0, 3.0))
def test_rules_hold_for_any_input(case: tuple[CampaignState, Forecasts], aggressiveness: float) -> None:
    state, forecasts = case
    d = decide(state, forecasts, SIGMAS, aggressiveness)
    _check_rules(state, forecasts, d)
    assert decide(state, forecasts, SIGMAS, aggressiveness) == d  # deterministic


@settings(max_examples=100, deadline=None)
@given(case=_cases())
def test_missing_forecasts_mean_no_bid(case: tuple[CampaignState, Forecasts]) -> None:
    state, _ = case
    d = decide(state, Forecasts(state.tick, {}), SIGMAS)
    assert d.bids == ()
    assert d.reason in (NoBid.NO_FORECAST, NoBid.OUTSIDE_FLIGHT, NoBid.BUDGET_SPENT, NoBid.NO_FLIGHT_END)


def test_a_lane_whose_bid_cap_underflows_to_zero_spends_nothing() -> None:
    """A conversion rate near the smallest float makes the value-based bid cap 0: no log of 0."""
    from common.engine.pacing import Auction, Lane, spend

    lane = Lane(Auction.of(volume=100.0, cpc=1.0, sigma=0.5, cvr=5e-324, bid_cap=0.0), 10.0)
    assert spend([lane], alpha=1e300) == (0.0, 0.0)
