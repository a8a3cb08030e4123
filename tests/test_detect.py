"""The cycle detector: a period found where there is one, none where there is not, hints respected."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from common.forecast.detect import MAX_POINTS, SCAN_CYCLES, block_size, detect, learn


def _volume(
    ticks: int, period: float = 0.0, amplitude: float = 0.0, *, trend: float = 0.0, phi: float = 0.85,
    sd: float = 0.05, seed: int = 1, phase: float = 0.4,
) -> np.ndarray:  # fmt: skip
    """Log-normal volume: a harmonic of ``period``, a linear ``trend`` over the series, AR(1) noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(ticks, dtype=float)
    noise = lfilter([1.0], [1.0, -phi], rng.normal(0.0, sd, ticks))
    cycle = amplitude * np.sin(2 * math.pi * t / period + phase) if period else 0.0
    return np.asarray(300.0 * np.exp(cycle + trend * t / ticks + noise))


@pytest.mark.parametrize("period", [7, 24, 90])
def test_a_planted_period_is_found_in_noise(period: int) -> None:
    found = detect(_volume(6 * period + 40, period, 0.3, seed=period))
    assert found is not None
    assert found.period == pytest.approx(period, rel=0.03)
    assert found.amplitude == pytest.approx(0.3, abs=0.06)


@pytest.mark.parametrize("seed", range(6))
def test_noise_and_trends_have_no_cycle(seed: int) -> None:
    assert detect(_volume(720, phi=0.0, seed=seed)) is None, "white noise"
    assert detect(_volume(720, phi=0.9, seed=seed)) is None, "AR(1) noise"
    assert detect(_volume(720, trend=1.5, seed=seed)) is None, "a trend"
    outage = _volume(720, trend=-0.8, seed=seed)
    outage[300:380] = 0.0
    assert detect(outage) is None, "a trend and an outage"


def test_a_daily_cycle_is_found_inside_a_multi_day_flight() -> None:
    """Four days of 180 ticks, a trend across them: the day, not the flight, is the period."""
    volume = _volume(720, 180, 0.35, trend=0.5, seed=3)
    found = detect(volume)
    assert found is not None and found.period == pytest.approx(180, rel=0.03)
    cycle = learn(volume, 0)
    assert cycle is not None and cycle.period == found.period
    # The phase is that of the absolute tick: sin(2 pi t / 180 + 0.4) = a cos + b sin.
    assert cycle.a == pytest.approx(0.35 * math.sin(0.4), abs=0.08)
    assert cycle.b == pytest.approx(0.35 * math.cos(0.4), abs=0.08)


def test_one_cycle_seen_is_not_enough_without_a_hint() -> None:
    """0.4 of a long cycle fits a trend as well as a cycle: no period, unless one is hinted."""
    volume = _volume(360, 900, 0.6, seed=4, phase=0.0)
    assert detect(volume) is None
    hinted = detect(volume, hints=[900])
    assert hinted is not None and hinted.period == 900
    assert detect(_volume(360, seed=4), hints=[900]) is None, "a hint is tested, not assumed"


def test_a_long_history_is_scanned_on_a_bounded_number_of_points() -> None:
    """A day of 2-second ticks seen over 2.3 days (the feed's ring): found on block means, so that
    no scan or fit handles more than MAX_POINTS points, whatever the history's length."""
    volume = _volume(100_000, 43_200, 0.4, seed=6, phi=0.95, sd=0.02)
    cycle = learn(volume, 0)
    assert cycle is not None and cycle.period == pytest.approx(43_200, rel=0.03)
    assert cycle.a == pytest.approx(0.4 * math.sin(0.4), abs=0.08)
    for period in (4, 100, 2_000, 43_200):
        for ticks in (720, 100_000, 10_000_000):
            size = block_size(period, ticks)
            assert min(ticks, SCAN_CYCLES * period) / size <= MAX_POINTS
            assert size <= max(1, period / 8), "a period spans at least 8 points"


@pytest.mark.parametrize("seed", range(4))
def test_a_hint_is_not_taken_where_a_fraction_of_it_fits_better(seed: int) -> None:
    """A day of 360 ticks under a hint of two days: before the scan can pin the day down (1.5
    cycles), a harmonic of the hint with a line fits part of it; the day's own harmonic fits better."""
    hint = 720
    for ticks in (240, 300, 420, 500):
        volume = _volume(ticks, 360, 0.4, seed=seed, phase=1.0)
        found = detect(volume, hints=[hint])
        assert found is None or found.period != hint, f"{ticks} ticks"
    for ticks in (360, 420):
        found = detect(_volume(ticks, hint, 0.6, seed=seed, phase=0.0), hints=[hint])
        assert found is not None and found.period == hint, f"a hint that is the cycle, half of it seen ({ticks})"
