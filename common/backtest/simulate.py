"""A pure backtest: the decision engine over a scenario, with no Redis, no Celery and no clock.

At tick ``t`` the forecasts see only feed figures of ticks ``< t`` and each campaign only its own
outcomes of ticks ``< t``; the bids then clear against the true figures of tick ``t`` with the
market model of MARKET.md. Forecasts go through their JSON form every tick, as they do when the
fleet caches them. The decision log is MARKET.md's JSON Lines, ready for ``score.py``.

    python -m common.backtest.simulate SCENARIO.json DECISIONS.jsonl [--aggressiveness 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from common.engine import DEFAULT_TUNING, CampaignState, PacingState, Tuning, decide
from common.forecast.forecasts import Forecasts, forecast
from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import Bid


@dataclass
class CampaignTally:
    remaining: float
    spent: float = 0.0
    clicks: float = 0.0
    conversions: float = 0.0
    value: float = 0.0
    waste: float = 0.0
    bids: int = 0
    throttled: int = 0
    pacing: PacingState = field(default_factory=PacingState)


@dataclass
class BacktestResult:
    campaigns: dict[str, CampaignTally]
    decisions: int
    seconds: float
    decide_seconds: float

    @property
    def spent(self) -> float:
        return sum(c.spent for c in self.campaigns.values())

    @property
    def value(self) -> float:
        return sum(c.value for c in self.campaigns.values())

    @property
    def waste(self) -> float:
        return sum(c.waste for c in self.campaigns.values())

    def summary(self) -> dict[str, float]:
        bids = sum(c.bids for c in self.campaigns.values())
        return {
            "decisions": self.decisions,
            "bids": bids,
            "spent": self.spent,
            "value": self.value,
            "waste_share": self.waste / self.spent if self.spent else 0.0,
            "throttled_share": sum(c.throttled for c in self.campaigns.values()) / bids if bids else 0.0,
            "seconds": self.seconds,
            "us_per_decision": 1e6 * self.decide_seconds / self.decisions if self.decisions else 0.0,
        }


def feed_array(scenario: Scenario) -> np.ndarray:
    """The scenario's true series as (platforms, ticks, 3): cpc, cvr, volume."""
    return np.stack([np.stack([p.cpc, p.cvr, p.volume], axis=1) for p in scenario.platforms.values()])


def run(
    scenario: Scenario,
    log: IO[str] | None = None,
    *,
    aggressiveness: float = 1.0,
    tuning: Tuning = DEFAULT_TUNING,
    window: int = 30,
    season: int | None = None,
) -> BacktestResult:
    """Run every campaign of ``scenario`` through the engine; write the decision log to ``log``.

    ``season`` is the length of the market's volume cycle in ticks; by default the scenario's
    length (one cycle per scenario), 0 for none.
    """
    started = time.perf_counter()
    pids = list(scenario.platforms)
    feed = feed_array(scenario)
    sigmas = {pid: p.price_sigma for pid, p in scenario.platforms.items()}
    tallies = {c.id: CampaignTally(remaining=c.budget) for c in scenario.campaigns}
    decisions = 0
    decide_seconds = 0.0
    season = scenario.ticks if season is None else season
    span = max(window, season)
    for t in range(scenario.ticks):
        live = [c for c in scenario.campaigns if c.in_flight(t) and tallies[c.id].remaining > 0]
        if not live:
            continue
        fc = _forecasts(feed[:, max(0, t - span) : t], pids, t, window, season)
        placed: list[Bid] = []
        clock = time.perf_counter()
        for spec in live:
            tally = tallies[spec.id]
            state = CampaignState(
                spec=spec,
                tick=t,
                remaining=tally.remaining,
                spent=tally.spent,
                clicks=tally.clicks,
                conversions=tally.conversions,
                ticks_left=(spec.end_tick or scenario.ticks) - t,
                pacing=tally.pacing,
            )
            decision = decide(state, fc, sigmas, aggressiveness, tuning)
            tally.pacing = decision.pacing
            placed.extend(decision.bids)
        decide_seconds += time.perf_counter() - clock
        decisions += len(live)
        if placed:
            _clear(scenario, t, placed, tallies, log)
    return BacktestResult(tallies, decisions, time.perf_counter() - started, decide_seconds)


def _forecasts(history: np.ndarray, pids: Sequence[str], tick: int, window: int, season: int) -> Forecasts:
    if history.shape[1] == 0:
        return Forecasts(tick, {})
    fc = forecast(history, pids, tick, window=window, season=season)
    return Forecasts.from_dict(json.loads(json.dumps(fc.to_dict())))  # as cached for the fleet


def _clear(
    scenario: Scenario, t: int, placed: Sequence[Bid], tallies: dict[str, CampaignTally], log: IO[str] | None
) -> None:
    """Clear one tick's bids against the true figures and book the outcomes."""
    specs = {c.id: c for c in scenario.campaigns}
    n = len(placed)
    volume, cpc, sigma, cvr, vpc, bid, cap = (np.empty(n) for _ in range(7))
    for i, b in enumerate(placed):
        series = scenario.platforms[b.platform]
        spec = specs[b.campaign]
        volume[i] = spec.platforms[b.platform] * series.volume[t]
        cpc[i], sigma[i], cvr[i] = series.cpc[t], series.price_sigma, series.cvr[t]
        vpc[i], bid[i], cap[i] = spec.value_per_conversion, b.bid, b.spend_cap
    cost, clicks, conv, waste = outcomes(volume, cpc, sigma, cvr, vpc, bid, np.inf)
    throttled = cost > cap
    cost, clicks, conv, waste = outcomes(volume, cpc, sigma, cvr, vpc, bid, cap)
    for i, b in enumerate(placed):
        tally = tallies[b.campaign]
        c = float(cost[i])
        tally.remaining = max(0.0, tally.remaining - c)
        tally.spent += c
        tally.clicks += float(clicks[i])
        tally.conversions += float(conv[i])
        tally.value += float(conv[i]) * vpc[i]
        tally.waste += float(waste[i])
        tally.bids += 1
        tally.throttled += bool(throttled[i])
        if log is not None:
            record = {
                "tick": t,
                "campaign": b.campaign,
                "platform": b.platform,
                "bid": b.bid,
                "spend_cap": b.spend_cap,
                "cost": c,
                "clicks": float(clicks[i]),
                "conversions": float(conv[i]),
            }
            log.write(json.dumps(record) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("scenario", type=Path)
    parser.add_argument("decisions", type=Path)
    parser.add_argument("--aggressiveness", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=30)
    args = parser.parse_args(argv)
    scenario = Scenario.load(args.scenario)
    with args.decisions.open("w") as fh:
        result = run(scenario, fh, aggressiveness=args.aggressiveness, window=args.window)
    print(json.dumps(result.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
