"""Forecasts: exact where they should be, robust where the feed misbehaves, always in domain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.forecast.forecasts import CPC, CVR, VOLUME, Forecasts, forecast, forecast_arrays, forecast_error
from common.market.generator import generate


def _history(cpc: np.ndarray, cvr: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """One platform's series as a (1, ticks, 3) history."""
    return np.stack([cpc, cvr, volume], axis=1)[None]


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    out = np.zeros(n)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + rng.normal(0, sd)
    return out


def test_exact_on_a_noiseless_trend() -> None:
    t = np.arange(40.0)
    history = _history(np.exp(0.2 + 0.01 * t), np.exp(-3.5 - 0.004 * t), np.exp(5.0 + 0.02 * t))
    arr = forecast_arrays(history, window=30, horizon=4)
    for h in range(1, 5):
        expected = [0.2 + 0.01 * (39 + h), -3.5 - 0.004 * (39 + h), 5.0 + 0.02 * (39 + h)]
        np.testing.assert_allclose(arr.ahead[0, h - 1], expected, rtol=0, atol=1e-9)


def test_exact_on_a_constant_series() -> None:
    history = _history(np.full(30, 0.8), np.full(30, 0.03), np.full(30, 250.0))
    f = forecast(history, ["search"], 30).platforms["search"]
    assert f.next == pytest.approx((0.8, 0.03, 250.0), rel=1e-12)
    assert f.up and f.observations == 30


def test_short_window_falls_back_to_the_last_value() -> None:
    history = _history(np.array([1.0, 1.4, 0.9]), np.array([0.02, 0.05, 0.04]), np.array([100.0, 130.0, 90.0]))
    f = forecast(history, ["p"], 3, min_obs=5).platforms["p"]
    assert f.next == pytest.approx((0.9, 0.04, 90.0))
    assert f.ahead[-1] == pytest.approx((0.9, 0.04, 90.0))


def test_no_observation_is_missing_unless_a_prior_is_given() -> None:
    history = np.full((2, 10, 3), np.nan)
    history[0] = [1.0, 0.05, 200.0]
    fc = forecast(history, ["seen", "unseen"], 10)
    assert set(fc.platforms) == {"seen"}
    with_prior = forecast(history, ["seen", "unseen"], 10, prior=[[1.0, 0.05, 200.0], [2.0, 0.01, 50.0]])
    assert with_prior.platforms["unseen"].next == pytest.approx((2.0, 0.01, 50.0))


def test_adapts_at_once_after_a_level_shift() -> None:
    rng = np.random.default_rng(3)
    n, shift_at = 60, 55
    log_cpc = math.log(1.0) + _ar1(rng, n, 0.9, 0.02)
    log_cpc[shift_at:] += 0.7  # price doubles
    cvr, volume = np.full(n, 0.03), np.full(n, 300.0)
    for seen in (shift_at + 1, shift_at + 2, shift_at + 4):
        f = forecast(_history(np.exp(log_cpc[:seen]), cvr[:seen], volume[:seen]), ["p"], seen).platforms["p"]
        assert abs(math.log(f.next.cpc) - log_cpc[seen - 1]) < 0.08, seen


def test_an_isolated_spike_is_ignored() -> None:
    n = 40
    cpc = np.full(n, 1.0) * np.exp(0.001 * np.arange(n))
    spiked = cpc.copy()
    spiked[30] *= 5.0
    flat = forecast(_history(cpc, np.full(n, 0.05), np.full(n, 100.0)), ["p"], n).platforms["p"]
    spiky = forecast(_history(spiked, np.full(n, 0.05), np.full(n, 100.0)), ["p"], n).platforms["p"]
    assert spiky.next.cpc == pytest.approx(flat.next.cpc, rel=0.02)


def test_an_outage_is_not_a_level() -> None:
    n = 40
    volume = np.full(n, 200.0)
    volume[-6:] = 0.0
    f = forecast(_history(np.full(n, 1.0), np.full(n, 0.05), volume), ["p"], n).platforms["p"]
    assert not f.up
    assert f.expected_volume == 0.0
    assert f.next.volume == pytest.approx(200.0, rel=1e-6)  # what it serves once it is back


def test_missing_ticks_are_allowed() -> None:
    t = np.arange(30.0)
    history = _history(np.exp(0.01 * t), np.full(30, 0.05), np.full(30, 100.0))
    history[0, [3, 10, 11, 29], :] = np.nan
    f = forecast(history, ["p"], 30).platforms["p"]
    assert f.next.cpc == pytest.approx(math.exp(0.01 * 30), rel=1e-6)
    assert f.observations == 26


def test_json_round_trip_keeps_every_number() -> None:
    scenario = generate(campaigns=0, platforms=3, ticks=80, seed=5)
    history = np.stack([np.stack([p.cpc, p.cvr, p.volume], axis=1) for p in scenario.platforms.values()])
    fc = forecast(history[:, :60], list(scenario.platforms), 60)
    again = Forecasts.from_dict(json.loads(json.dumps(fc.to_dict(), allow_nan=False)))
    assert again == fc


def test_unknown_numbers_travel_as_null() -> None:
    history = _history(np.array([1.0, 1.1]), np.array([0.02, 0.02]), np.array([10.0, 10.0]))
    fc = forecast(history, ["p"], 2)
    data = fc.to_dict()
    data["platforms"]["p"]["log_sd"][0] = None
    assert math.isnan(Forecasts.from_dict(json.loads(json.dumps(data))).platforms["p"].log_sd.cpc)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        forecast_arrays(np.ones((2, 10)))
    with pytest.raises(ValueError, match="platform ids"):
        forecast(np.ones((2, 10, 3)), ["only-one"], 10)


def test_forecast_error_beside_the_naive_forecast() -> None:
    scenario = generate(campaigns=0, platforms=4, ticks=240, seed=11)
    series = np.stack([np.stack([p.cpc, p.cvr, p.volume], axis=1) for p in scenario.platforms.values()])
    err = forecast_error(series)
    for metric in ("cpc", "cvr", "volume"):
        assert 0 < err.model[metric] < 0.2
        assert err.points[metric] > 0
        # These series are AR(1) with phi near 0.9, where the last value is close to optimal:
        # the model must not be meaningfully worse than it.
        assert err.model[metric] <= 1.03 * err.naive[metric], metric


_values = st.one_of(st.just(math.nan), st.just(0.0), st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False))


@settings(max_examples=150, deadline=None)
@given(
    history=arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 45), st.just(3)), elements=_values),
    window=st.integers(2, 40),
)
def test_forecasts_always_stay_in_their_domain(history: np.ndarray, window: int) -> None:
    history = history.copy()
    history[..., CVR] = np.where(history[..., CVR] > 1, history[..., CVR] % 1, history[..., CVR])
    history[..., CPC] = np.where(history[..., CPC] == 0, np.nan, history[..., CPC])
    arr = forecast_arrays(history, window=window)
    fc = forecast(history, [f"p{i}" for i in range(history.shape[0])], history.shape[1], window=window)
    for pid, f in fc.platforms.items():
        assert f.observations == arr.observations[int(pid[1:])] >= 1, pid
        for fig in f.ahead:
            assert math.isfinite(fig.cpc) and fig.cpc > 0
            assert 0 <= fig.cvr <= 1
            assert math.isfinite(fig.volume) and fig.volume >= 0
        assert all(math.isfinite(x) and x >= 0 for x in f.log_sd)
    # A platform is forecast exactly when each of its metrics has at least one observation in the
    # window; a volume of 0 is an outage, not an observation of the level.
    recent = history[:, -window:]
    seen = ~np.isnan(recent[..., CPC]).all(axis=1) & ~np.isnan(recent[..., CVR]).all(axis=1)
    seen &= (recent[..., VOLUME] > 0).any(axis=1)
    assert {f"p{i}" for i in np.flatnonzero(seen)} == set(fc.platforms)


def test_a_short_cycle_the_window_holds_twice_is_forecast() -> None:
    t = np.arange(60.0)
    wave = 0.1 * np.sin(2 * np.pi * t / 7)
    history = _history(np.exp(0.5 + wave), np.exp(np.log(0.05) + wave), np.exp(5.0 + 3 * wave))
    seasonal = forecast_arrays(history, window=30, horizon=5, periods=[7])
    plain = forecast_arrays(history, window=30, horizon=5)
    for h in range(1, 6):
        nxt = 0.1 * math.sin(2 * math.pi * (59 + h) / 7)
        expected = [0.5 + nxt, math.log(0.05) + nxt, 5.0 + 3 * nxt]
        np.testing.assert_allclose(seasonal.ahead[0, h - 1], expected, atol=1e-9)
    assert np.abs(plain.ahead[0, 0, CVR] - (math.log(0.05) + 0.1 * math.sin(2 * math.pi * 60 / 7))) > 0.01
    assert (seasonal.log_sd < plain.log_sd).all()


def test_a_cycle_longer_than_half_the_window_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    history = np.exp(rng.normal(0, 0.1, (2, 60, 3)))
    plain = forecast_arrays(history, window=30)
    for periods in ([16, 0], [0, 720], [1, 31]):
        arr = forecast_arrays(history, window=30, periods=periods)
        np.testing.assert_array_equal(arr.ahead, plain.ahead)
        np.testing.assert_array_equal(arr.log_sd, plain.log_sd)


def test_periods_must_match_the_platforms() -> None:
    with pytest.raises(ValueError, match="periods has 1 values for 2 platforms"):
        forecast_arrays(np.ones((2, 30, 3)), periods=[7])
