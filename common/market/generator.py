"""Synthetic markets and campaigns for demos, load tests and backtests, reproducible from a seed.

Each platform's CPC, CVR and volume follow a level with a slow trend, a daily cycle, AR(1) noise
in log space, and occasional shocks (a jump that decays) and outages (no volume for a while).
Values are rounded as a scenario file stores them, so a generated scenario and its file agree.
The day, the cycle's strength, the trend, long outages and how tight budgets are can be set;
:mod:`common.market.kinds` names the markets the engine is checked on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.market.model import outcomes
from common.market.scenario import PlatformSeries, Scenario
from common.models import CampaignGoal, CampaignSpec, FloatArray, GoalMetric

PLATFORM_NAMES = ("search", "social", "video", "display", "retail", "native", "audio", "ctv")


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> FloatArray:
    shocks = rng.normal(0.0, sd, n)
    out = np.empty(n)
    level = rng.normal(0.0, sd / np.sqrt(1 - phi**2))
    for t in range(n):
        level = phi * level + shocks[t]
        out[t] = level
    return out


def _shocks(rng: np.random.Generator, n: int, rate: float, scale: float) -> FloatArray:
    """Log-multiplier of sudden jumps that decay back over tens of ticks."""
    out = np.zeros(n)
    for start in np.flatnonzero(rng.random(n) < rate):
        size = rng.normal(0.0, scale)
        decay = rng.uniform(0.9, 0.99)
        span = np.arange(n - start)
        out[start:] += size * decay**span
    return out


@dataclass(frozen=True, slots=True)
class Shape:
    """How a generated market moves: the defaults are the demo market's.

    ``day_ticks`` is the cycle's period (None: the whole scenario), ``cycle`` scales its amplitude
    (0: no cycle), ``trend`` is the sd of the price's drift over the scenario in log units and
    ``volume_trend`` that of the volume's,
    ``outages`` the long outages (a tenth of the scenario each) per platform, ``budget`` the
    range of budgets as a share of what bidding the full click value would spend, and ``wander``
    the sd per tick of a random walk in log CPC and log CVR (0: none).
    """

    day_ticks: int | None = None
    cycle: float = 1.0
    trend: float = 0.25
    volume_trend: float = 0.0
    outages: int = 0
    budget: tuple[float, float] = (0.15, 1.3)
    wander: float = 0.0


def _platform(rng: np.random.Generator, pid: str, ticks: int, shape: Shape, shock_rate: float) -> PlatformSeries:
    t = np.arange(ticks)
    phase = rng.uniform(0, 2 * np.pi)
    day = shape.cycle * np.sin(2 * np.pi * t / (shape.day_ticks or ticks) + phase)
    trend = rng.normal(0.0, shape.trend) * t / max(ticks, 1)
    log_cpc = (
        np.log(rng.uniform(0.3, 2.5))
        + trend
        + rng.uniform(0.03, 0.12) * day
        + _ar1(rng, ticks, 0.9, 0.03)
        + _shocks(rng, ticks, shock_rate, 0.35)
    )
    log_cvr = np.log(rng.uniform(0.005, 0.1)) + rng.uniform(0.02, 0.1) * day + _ar1(rng, ticks, 0.85, 0.04)
    log_cvr += _shocks(rng, ticks, shock_rate / 2, 0.3)
    log_vol = (
        np.log(rng.uniform(100, 500))
        + rng.uniform(0.1, 0.35) * day
        + _ar1(rng, ticks, 0.8, 0.05)
        + _shocks(rng, ticks, shock_rate, 0.3)
    )
    if shape.volume_trend:
        log_vol += rng.normal(0.0, shape.volume_trend) * t / max(ticks, 1)
    volume = np.exp(log_vol)
    for start in np.flatnonzero(rng.random(ticks) < shock_rate / 4):
        volume[start : start + int(rng.integers(3, 30))] = 0.0
    if shape.outages:
        for start in rng.integers(0, ticks, size=shape.outages):
            volume[start : start + max(ticks // 10, 1)] = 0.0
    if shape.wander:
        # Drawn last, so that a market without it is the one the same seed always gave.
        log_cpc = log_cpc + np.cumsum(rng.normal(0.0, shape.wander, ticks))
        log_cvr = log_cvr + np.cumsum(rng.normal(0.0, shape.wander, ticks))
    return PlatformSeries(
        id=pid,
        price_sigma=round(float(rng.uniform(0.25, 0.65)), 3),
        cpc=np.round(np.maximum(np.exp(log_cpc), 0.01), 6),
        cvr=np.round(np.clip(np.exp(log_cvr), 0.0, 1.0), 6),
        volume=np.round(volume, 4),
    )


def _campaign(
    rng: np.random.Generator,
    cid: str,
    platforms: dict[str, PlatformSeries],
    ticks: int,
    late_flights: float,
    budget_share: tuple[float, float],
) -> CampaignSpec:
    ids = list(platforms)
    chosen = rng.choice(ids, size=int(rng.integers(1, min(4, len(ids)) + 1)), replace=False)
    audience = {str(p): round(float(rng.uniform(0.002, 0.06)), 5) for p in chosen}
    # Value per conversion: clicks on the chosen platforms are worth 0.8x to 3x their price.
    ratio = np.mean([platforms[p].cpc.mean() / max(platforms[p].cvr.mean(), 1e-6) for p in audience])
    vpc = round(float(ratio * rng.uniform(0.8, 3.0)), 3)
    if rng.random() >= late_flights:
        start, end = 0, ticks
    else:
        start = int(rng.integers(0, ticks // 2))
        end = int(rng.integers(start + max(ticks // 10, 1), ticks + 1))
    # Budget: a fraction of what bidding the full click value would spend over the flight.
    full = 0.0
    for p, a in audience.items():
        s = platforms[p]
        cost, _, _, _ = outcomes(
            a * s.volume[start:end],
            s.cpc[start:end],
            s.price_sigma,
            s.cvr[start:end],
            vpc,
            vpc * s.cvr[start:end],
            np.inf,
        )
        full += float(cost.sum())
    budget = round(max(full * rng.uniform(*budget_share), 1.0), 2)
    extra: dict[str, float] = {}
    if rng.random() < 0.3:
        extra["max_bid"] = round(float(max(platforms[p].cpc.mean() for p in audience) * rng.uniform(1.2, 3)), 3)
    if rng.random() < 0.4:
        extra["target_cpa"] = round(vpc * float(rng.uniform(0.4, 0.9)), 3)
    return CampaignSpec(
        id=cid,
        budget=budget,
        value_per_conversion=vpc,
        platforms=audience,
        start_tick=start,
        end_tick=end,
        **extra,
    )


def generate(
    campaigns: int = 200,
    platforms: int = 4,
    ticks: int = 720,
    seed: int = 7,
    tick_seconds: float = 2.0,
    shock_rate: float = 0.004,
    late_flights: float = 0.3,
    name: str | None = None,
    shape: Shape = Shape(),
    goals: float = 0.0,
) -> Scenario:
    """A reproducible scenario; by default one 'day' of seasonality spans the whole scenario.

    ``late_flights`` is the share of campaigns whose flight is a window inside the scenario
    rather than all of it; ``shape`` sets the cycle, trend, long outages and budgets. ``goals`` is
    the share of campaigns given a goal (:func:`with_goals`); 0 leaves the scenario as it always was.
    """
    if not 0.0 <= goals <= 1.0:
        raise ValueError("goals must be between 0 and 1")
    if not 1 <= platforms <= len(PLATFORM_NAMES):
        raise ValueError(f"platforms must be between 1 and {len(PLATFORM_NAMES)}")
    if campaigns < 0 or ticks < 1:
        raise ValueError("campaigns must be >= 0 and ticks >= 1")
    rng = np.random.default_rng(seed)
    if shape.day_ticks is not None and shape.day_ticks < 2:
        raise ValueError("day_ticks must be >= 2")
    series = {pid: _platform(rng, pid, ticks, shape, shock_rate) for pid in PLATFORM_NAMES[:platforms]}
    specs = [_campaign(rng, f"c{i:05d}", series, ticks, late_flights, shape.budget) for i in range(campaigns)]
    scenario = Scenario(name or f"generated-{seed}", ticks, tick_seconds, series, specs)
    return with_goals(scenario, goals, seed) if goals > 0 else scenario


# Goal targets as a share of the most units the budget buys in hindsight: most goals are reachable,
# some tight, some beyond what the budget buys (the engine must say so early).
GOAL_TARGET_SHARE = (0.3, 1.2)


def with_goals(scenario: Scenario, share: float, seed: int) -> Scenario:
    """``scenario`` with a goal on about ``share`` of its campaigns: clicks or conversions, half each,
    the target a random share (``GOAL_TARGET_SHARE``) of what the budget buys at best.

    Drawn from a generator of their own, so the market and the campaigns are those of the scenario
    without goals, and a backtest of both compares like with like.
    """
    from common.backtest.hindsight import goal_capacity  # the hindsight builds on the market model

    rng = np.random.default_rng([seed, 0x60A1])
    specs = []
    for spec in scenario.campaigns:
        if rng.random() >= share:
            specs.append(spec)
            continue
        metric = GoalMetric.CLICKS if rng.random() < 0.5 else GoalMetric.CONVERSIONS
        capacity = goal_capacity(spec, scenario, metric)
        target = round(capacity * float(rng.uniform(*GOAL_TARGET_SHARE)), 2)
        if target <= 0:
            specs.append(spec)
            continue
        specs.append(spec.model_copy(update={"goal": CampaignGoal(metric=metric, target=target)}))
    return Scenario(scenario.name, scenario.ticks, scenario.tick_seconds, scenario.platforms, specs)
