"""The volume cycle: its fit, the outlook it gives over a flight, and how the engine uses it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.engine import CampaignState, decide
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast, forecast
from common.forecast.season import VolumeOutlook, fit_cycle, outlook
from common.models import CampaignSpec

SEASON = 720


def _cycle_volume(ticks: int, a: float, b: float, *, noise: float = 0.03, seed: int = 3) -> np.ndarray:
    """Volume with one harmonic of ``SEASON`` ticks and AR(1) noise in log space."""
    rng = np.random.default_rng(seed)
    level = np.zeros(ticks)
    for t in range(1, ticks):
        level[t] = 0.9 * level[t - 1] + rng.normal(0.0, noise)
    angle = 2 * math.pi * np.arange(ticks) / SEASON
    return np.asarray(200.0 * np.exp(a * np.cos(angle) + b * np.sin(angle) + level))


def _brute_force(a: float, b: float, tick: int, n: int) -> float:
    angle = 2 * math.pi * np.arange(tick, tick + n) / SEASON
    shape = a * np.cos(angle) + b * np.sin(angle)
    return float(np.exp(shape - shape[0]).sum())


def test_fit_recovers_a_cycle_seen_in_full() -> None:
    cycle = fit_cycle(_cycle_volume(SEASON, 0.6, -0.3), 0, SEASON)
    assert cycle is not None
    assert cycle[0] == pytest.approx(0.6, abs=0.08)
    assert cycle[1] == pytest.approx(-0.3, abs=0.08)


def test_fit_uses_the_absolute_tick_for_the_phase() -> None:
    volume = _cycle_volume(2 * SEASON, 0.5, 0.2)
    cycle = fit_cycle(volume[SEASON // 3 :], SEASON // 3, SEASON)
    assert cycle is not None
    assert cycle == pytest.approx((0.5, 0.2), abs=0.08)


def test_a_market_without_a_cycle_fits_nearly_flat() -> None:
    cycle = fit_cycle(_cycle_volume(SEASON, 0.0, 0.0), 0, SEASON)
    assert cycle is not None
    assert math.hypot(*cycle) < 0.08
    assert outlook(cycle, SEASON, SEASON).ticks(SEASON) == pytest.approx(SEASON, rel=0.1)


def test_the_prior_keeps_a_barely_seen_cycle_near_flat() -> None:
    """Twenty ticks of a 720-tick cycle say almost nothing about the rest of it."""
    volume = _cycle_volume(SEASON, 0.6, -0.3)
    early = fit_cycle(volume[:20], 0, SEASON)
    late = fit_cycle(volume[:400], 0, SEASON)
    assert early is not None and late is not None
    assert math.hypot(*early) < 0.5 * math.hypot(*late)


def test_too_few_observations_give_no_fit() -> None:
    volume = _cycle_volume(100, 0.5, 0.0)
    volume[10:] = 0.0  # an outage
    assert fit_cycle(volume, 0, SEASON) is None
    assert fit_cycle(volume[:40], 0, 1) is None


def test_outlook_sums_the_cycle_over_any_horizon() -> None:
    a, b, tick = 0.7, -0.2, 130
    view = outlook((a, b), tick, SEASON)
    assert view.ticks(0) == 0.0
    assert view.ticks(1) == pytest.approx(1.0)
    for n in (1, 2, 8, view.step, 5 * view.step, SEASON):  # on the kept points it is exact
        assert view.ticks(n) == pytest.approx(_brute_force(a, b, tick, n), rel=1e-12)
    for n in (7, 333, 719):  # between them, within the curvature of one step
        assert view.ticks(n) == pytest.approx(_brute_force(a, b, tick, n), rel=0.01)
    assert view.ticks(2 * SEASON + 50) == pytest.approx(_brute_force(a, b, tick, 2 * SEASON + 50), rel=0.01)


def test_outlook_sees_more_volume_ahead_when_the_cycle_rises() -> None:
    rising = outlook((-0.8, 0.0), 0, SEASON)  # at its trough at tick 0
    falling = outlook((0.8, 0.0), 0, SEASON)
    assert rising.ticks(300) > 300 > falling.ticks(300)


def test_forecasts_carry_the_outlook_through_json() -> None:
    volume = _cycle_volume(400, 0.5, 0.3)
    history = np.stack([np.ones(400), np.full(400, 0.05), volume], axis=1)[None]
    with_season = forecast(history, ["search"], 400, season=SEASON)
    without = forecast(history, ["search"], 400)
    assert without.platforms["search"].outlook is None
    view = with_season.platforms["search"].outlook
    assert view is not None and view.season == SEASON
    again = Forecasts.from_dict(json.loads(json.dumps(with_season.to_dict())))
    assert again == with_season
    assert VolumeOutlook.from_dict(view.to_dict()) == view


def _state() -> CampaignState:
    spec = CampaignSpec(id="c1", budget=100.0, value_per_conversion=40.0, platforms={"search": 0.05}, end_tick=600)
    return CampaignState(spec=spec, tick=100, remaining=100.0)


def _forecasts(view: VolumeOutlook | None) -> Forecasts:
    nxt = Figures(cpc=1.0, cvr=0.05, volume=200.0)
    f = PlatformForecast(ahead=(nxt,), log_sd=Figures(0.02, 0.02, 0.02), up=True, observations=100, outlook=view)
    return Forecasts(100, {"search": f})


def test_the_engine_holds_back_for_a_richer_season_and_spends_before_a_poorer_one() -> None:
    flat = decide(_state(), _forecasts(None), {"search": 0.4})
    richer = decide(_state(), _forecasts(outlook((-0.8, 0.0), 100, SEASON)), {"search": 0.4})
    poorer = decide(_state(), _forecasts(outlook((0.8, 0.0), 100, SEASON)), {"search": 0.4})
    assert richer.bids[0].bid < flat.bids[0].bid < poorer.bids[0].bid
    assert richer.pacing.lam > flat.pacing.lam > poorer.pacing.lam
