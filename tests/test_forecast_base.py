"""The base of a platform's figures and the path of the rest of a flight (common/forecast/base.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from common.engine.bidding import decide
from common.engine.state import CampaignState
from common.forecast.base import (
    NEAR_TICKS,
    RHO,
    MetricBase,
    PathOutlook,
    PlatformBase,
    fit_base,
    path,
    pooled,
)
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.models import CampaignSpec


def _history(log_cpc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = log_cpc.size
    cvr = np.exp(np.log(0.03) + rng.normal(0, 0.02, n))
    volume = np.exp(np.log(200.0) + rng.normal(0, 0.02, n))
    return np.column_stack([np.exp(log_cpc), cvr, volume])


def _shocks(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for start in range(0, n, 40):
        out[start:] += rng.normal(0, 0.4) * 0.9 ** np.arange(n - start)
    return out


def test_shocks_that_decay_are_learnt_not_to_last() -> None:
    rng = np.random.default_rng(1)
    base = fit_base(_history(np.log(1.5) + _shocks(600, rng), rng), 0, 0, None)
    assert base is not None
    assert base.metrics[0].persistence < 0.3
    assert base.metrics[0].level == pytest.approx(math.log(1.5), abs=0.1)


def test_a_trend_is_learnt_to_last() -> None:
    rng = np.random.default_rng(2)
    trend = np.log(1.5) + np.linspace(0, 1.0, 600) + rng.normal(0, 0.02, 600)
    base = fit_base(_history(trend, rng), 0, 0, None)
    assert base is not None
    assert base.metrics[0].persistence > 0.9


def test_a_wandering_price_is_not_taken_to_come_back() -> None:
    # A random walk swings back and forth by chance; a few long swings are no evidence of reversion.
    learnt = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        walk = np.log(1.5) + np.cumsum(rng.normal(0, 0.03, 400))
        base = fit_base(_history(walk, rng), 0, 0, None)
        assert base is not None
        learnt.append(base.metrics[0].persistence)
    assert min(learnt) > 0.7
    assert np.median(learnt) > 0.95


def _market(series: list[np.ndarray], seed: int) -> dict[str, PlatformBase | None]:
    rng = np.random.default_rng(seed)
    return {f"p{i}": fit_base(_history(x, rng), 0, 0, None) for i, x in enumerate(series)}


def _persistence(bases: dict[str, PlatformBase | None]) -> np.ndarray:
    return np.array([b.metrics[0].persistence for b in bases.values() if b is not None])


def test_platforms_whose_shocks_decay_learn_it_together() -> None:
    # 250 ticks of one platform are weak evidence; eight platforms that share the market's kind of
    # shock are strong evidence together.
    alone, together = [], []
    for trial in range(4):
        shocks = [np.log(1.5) + _shocks(250, np.random.default_rng(100 * trial + k)) for k in range(8)]
        bases = _market(shocks, trial)
        alone.append(_persistence(bases))
        together.append(_persistence(pooled(bases)))
    assert np.median(alone) > 0.4
    assert np.median(together) < 0.2
    assert max(p.max() for p in together) < max(p.max() for p in alone)


def test_wandering_prices_learnt_together_are_not_taken_to_come_back() -> None:
    walks = [np.log(1.5) + np.cumsum(np.random.default_rng(seed).normal(0, 0.03, 400)) for seed in range(8)]
    learnt = _persistence(pooled(_market(walks, 0)))
    assert learnt.min() > 0.7
    assert np.median(learnt) > 0.95


def test_a_platform_that_clearly_differs_keeps_its_own_persistence() -> None:
    rng = np.random.default_rng(7)
    series = [np.log(1.5) + _shocks(600, np.random.default_rng(k)) for k in range(7)]
    series.append(np.log(1.5) + np.linspace(0, 1.0, 600) + rng.normal(0, 0.02, 600))  # a trend
    learnt = _persistence(pooled(_market(series, 7)))
    assert learnt[-1] > 0.9
    assert learnt[:-1].max() < 0.3


def test_a_history_too_short_for_every_horizon_is_not_pooled() -> None:
    # With a few dozen ticks the estimates' variances are not to be trusted, least of all together
    # (a tick a day: residues of a weekly cycle read as deviations that overshoot).
    shocks = [np.log(1.5) + _shocks(120, np.random.default_rng(k)) for k in range(8)]
    bases = _market(shocks, 9)
    assert pooled(bases) == bases
    longer = _market([np.log(1.5) + _shocks(200, np.random.default_rng(k)) for k in range(8)], 9)
    assert pooled(longer) != longer


def test_a_platform_alone_keeps_what_it_learnt_by_itself() -> None:
    rng = np.random.default_rng(8)
    base = fit_base(_history(np.log(1.5) + _shocks(300, rng), rng), 0, 0, None)
    assert base is not None
    assert pooled({"a": base, "b": None}) == {"a": base, "b": None}
    # A platform without an estimate of its own (too little history) is not moved by the others.
    unknown = PlatformBase(0, (MetricBase(0.0, 0.0, 0.0, 1.0),) * 3)
    market = pooled({"a": base, "b": base, "c": unknown})
    assert market["c"] == unknown


def test_too_little_volume_fits_no_base() -> None:
    rng = np.random.default_rng(3)
    history = _history(np.zeros(30), rng)
    assert fit_base(history, 0, 0, None) is None
    history = _history(np.zeros(200), rng)
    history[:170, 2] = 0.0  # an outage
    assert fit_base(history, 0, 0, None) is None


def test_a_cycle_is_fitted_to_prices_only_once_the_history_holds_one() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(300)
    log_cpc = 0.2 * np.cos(2 * np.pi * t / 100)
    fitted = fit_base(_history(log_cpc, rng), 0, 100, (0.1, 0.0))
    assert fitted is not None
    assert fitted.metrics[0].a == pytest.approx(0.2, abs=0.02)
    assert fitted.metrics[2][1:3] == (0.1, 0.0)  # volume keeps the learnt harmonic
    short = fit_base(_history(log_cpc[:80], rng), 0, 100, (0.1, 0.0))
    assert short is not None and short.metrics[0][1:3] == (0.0, 0.0)


def _brute(base: PlatformBase, now: np.ndarray, tick: int, n: int) -> np.ndarray:
    """Cumulative sums of the path over the next ``n`` ticks, tick by tick."""
    h = np.arange(n, dtype=float)
    based = base.at(tick + h)
    dev = np.log(now) - based[:, 0]
    persist = np.array([m.persistence for m in base.metrics])[:, None]
    lasting = persist + (1 - persist) * RHO ** np.minimum(h, NEAR_TICKS)
    change = based - based[:, :1] + (lasting - 1) * dev[:, None]
    v = np.exp(change[2])
    return np.array([v.sum(), (v * change[0]).sum(), (v * change[1]).sum()])


@pytest.mark.parametrize("period", [0, 48, 500])
def test_the_path_read_anywhere_matches_the_sum_tick_by_tick(period: int) -> None:
    metric = MetricBase(0.1, 0.15, -0.05, 0.3)
    base = PlatformBase(period, (metric, metric._replace(level=-3.5, persistence=0.0), metric._replace(level=5.0)))
    now = np.array([1.4, 0.04, 120.0])
    view = path(base, now, tick=77)
    for n in (1, 2, 3, 17, NEAR_TICKS, NEAR_TICKS + 1, 300, 1500):
        expected = _brute(base, now, 77, n)
        got = np.array(view.cumulative(n))
        # Between marks the sums are interpolated: exact at the marks and to a few percent between.
        assert got == pytest.approx(expected, rel=0.03, abs=0.05 * n), n
    exact_at = [m for m in view.marks if m > 0]
    for n in exact_at:
        assert np.array(view.cumulative(n)) == pytest.approx(_brute(base, now, 77, n), rel=1e-9, abs=1e-9)


def test_a_path_that_fully_persists_without_a_cycle_is_todays_figures() -> None:
    flat = MetricBase(0.0, 0.0, 0.0, 1.0)
    view = path(PlatformBase(0, (flat, flat, flat)), np.array([2.0, 0.05, 300.0]), tick=10)
    chunk = view.chunk(1, 500)
    assert chunk is not None
    assert chunk.ticks == pytest.approx(499)
    assert chunk.log_cpc == pytest.approx(0.0, abs=1e-12)
    assert chunk.log_cvr == pytest.approx(0.0, abs=1e-12)


def test_a_deviation_that_does_not_last_comes_back_to_the_base() -> None:
    fading = MetricBase(0.0, 0.0, 0.0, 0.0)
    # CPC 50% above its base of 1.0 now: far ahead the plan expects the base.
    volume = MetricBase(math.log(300.0), 0, 0, 1.0)
    view = path(PlatformBase(0, (fading, fading, volume)), np.array([1.5, 1.0, 300.0]), 0)
    far = view.chunk(200, 400)
    assert far is not None
    assert far.log_cpc == pytest.approx(-math.log(1.5), rel=0.05)
    near = view.chunk(1, 2)
    assert near is not None
    assert near.log_cpc == pytest.approx(math.log(1.0) + (RHO - 1) * math.log(1.5), rel=1e-6)


def test_documents_round_trip_and_bad_ones_are_refused() -> None:
    metric = MetricBase(0.1, 0.2, 0.3, 0.4, 0.5, 0.01)
    base = PlatformBase(24, (metric, metric._replace(variance=math.inf), metric))
    assert PlatformBase.from_dict(base.to_dict()) == base
    assert json.loads(json.dumps(base.to_dict(), allow_nan=False))  # strict JSON: no Infinity
    # A document written before the estimates were kept reads with none.
    older = PlatformBase.from_dict({"period": 0, "metrics": [[0.1, 0.2, 0.3, 0.4]] * 3})
    assert older.metrics[0] == MetricBase(0.1, 0.2, 0.3, 0.4, 0.0, math.inf)
    view = path(base, np.array([1.0, 0.02, 50.0]), 5)
    assert PathOutlook.from_dict(view.to_dict()) == view
    broken = view.to_dict() | {"cpc": view.to_dict()["cpc"][:-1]}
    with pytest.raises(ValueError, match="path"):
        PathOutlook.from_dict(broken)
    with pytest.raises(ValueError, match="three"):
        PlatformBase.from_dict({"period": 0, "metrics": [[0, 0, 0, 1]]})
    with pytest.raises(ValueError, match="six"):
        PlatformBase.from_dict({"period": 0, "metrics": [[0, 0, 0, 1, 0, 1, 2]] * 3})


def test_a_plan_on_a_lasting_flat_path_bids_as_the_plan_without_one() -> None:
    spec = CampaignSpec.model_validate(
        {"id": "c1", "budget": 500.0, "value_per_conversion": 40.0, "platforms": {"p": 1.0}, "end_tick": 700}
    )
    state = CampaignState(spec=spec, tick=100, remaining=500.0)
    nxt = Figures(1.2, 0.03, 20.0)
    plain = PlatformForecast((nxt,), Figures(0.05, 0.05, 0.05), True, 30)
    flat = MetricBase(0.0, 0.0, 0.0, 1.0)
    with_path = PlatformForecast(
        (nxt,), Figures(0.05, 0.05, 0.05), True, 30, path=path(PlatformBase(0, (flat, flat, flat)), np.array(nxt), 100)
    )
    a = decide(state, Forecasts(100, {"p": plain}), {"p": 0.4})
    b = decide(state, Forecasts(100, {"p": with_path}), {"p": 0.4})
    assert len(a.bids) == len(b.bids) == 1
    assert b.bids[0].bid == pytest.approx(a.bids[0].bid, rel=1e-5)
    assert b.bids[0].spend_cap == pytest.approx(a.bids[0].spend_cap, rel=1e-5)
