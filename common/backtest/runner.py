"""Backtests: a scenario driven tick by tick through the same path as the live fleet.

For each tick the feed publishes the previous tick's true figures, the tick forecasts and fans out,
evaluations reserve, bid on the simulated platforms and settle in the ledger; then the next tick.
Only the executor differs: ``InlineExecutor`` calls the evaluation in this process, a Celery
executor (``worker.backtest``) sends the very same tasks to real workers. Both produce the same
decision log, byte for byte.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from common import keys
from common.backtest.goals import GoalReport, goal_report
from common.backtest.hindsight import optimum
from common.errors import BacktestError
from common.fleet import decisions, maintenance
from common.fleet import tick as ticks
from common.fleet.decisions import DecisionRecord
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.market.scenario import Scenario
from common.models import PlatformInfo

log = logging.getLogger(__name__)

LOG_FIELDS = ("tick", "campaign", "platform", "bid", "spend_cap", "cost", "clicks", "conversions")


class Executor(Protocol):
    def run_tick(self, tick: int) -> None:
        """Run one tick's path to the end: every evaluation of it has finished on return."""
        ...


@dataclass
class InlineExecutor:
    """Runs the tick and its evaluations in this process, one group after another."""

    fleet: Fleet

    def run_tick(self, tick: int) -> None:
        plan = ticks.begin(self.fleet, tick, simulate_feed=True)
        if plan is None:
            raise BacktestError(f"tick {tick} was already run in this Redis database")
        for group in plan.groups:
            evaluate(self.fleet, group, tick)


def prepare(fleet: Fleet, scenario: Scenario) -> None:
    """Load a scenario's platforms and campaigns into an empty database."""
    if fleet.r.exists(keys.CAMPAIGNS, keys.LAST_TICK):
        raise BacktestError("the backtest's Redis database is not empty: give it a fresh database")
    fleet.store.register_platforms(
        PlatformInfo(id=p.id, price_sigma=p.price_sigma) for p in scenario.platforms.values()
    )
    for spec in scenario.campaigns:
        fleet.store.create(spec)


# A bid its spend cap throttled costs the cap, up to float rounding.
THROTTLED = 1 - 1e-9


@dataclass
class CampaignResult:
    id: str
    budget: float
    spend: float = 0.0
    value: float = 0.0
    clicks: float = 0.0
    conversions: float = 0.0
    waste: float = 0.0
    bids: int = 0
    throttled: int = 0  # bids whose spend cap cut their cost
    optimum_value: float = math.nan
    optimum_spend: float = math.nan

    @property
    def efficiency(self) -> float | None:
        return self.value / self.optimum_value if self.optimum_value > 0 else None


@dataclass
class BacktestReport:
    scenario: str
    executor: str
    ticks: int
    seconds: float
    campaigns: list[CampaignResult] = field(default_factory=list)
    forecast_error: dict[str, Any] = field(default_factory=dict)
    aggressiveness: float = 1.0
    goals: GoalReport | None = None

    def totals(self) -> dict[str, Any]:
        spend = sum(c.spend for c in self.campaigns)
        budget = sum(c.budget for c in self.campaigns)
        value = sum(c.value for c in self.campaigns)
        waste = sum(c.waste for c in self.campaigns)
        bids = sum(c.bids for c in self.campaigns)
        best = sum(c.optimum_value for c in self.campaigns if not math.isnan(c.optimum_value))
        effs = sorted(e for c in self.campaigns if (e := c.efficiency) is not None)
        return {
            "campaigns": len(self.campaigns),
            "bids": bids,
            "spend": spend,
            "value": value,
            "waste": waste,
            "budget_use": spend / budget if budget else None,
            "optimum_value": best,
            "optimum_spend": sum(c.optimum_spend for c in self.campaigns if not math.isnan(c.optimum_spend)),
            "efficiency": value / best if best else None,
            "efficiency_p10": effs[len(effs) // 10] if effs else None,
            "waste_share": waste / spend if spend else 0.0,
            "throttled_share": sum(c.throttled for c in self.campaigns) / bids if bids else 0.0,
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "executor": self.executor,
            "ticks": self.ticks,
            "aggressiveness": self.aggressiveness,
            **self.totals(),
            "forecast_error": self.forecast_error,
            "per_campaign": [{**c.__dict__, "efficiency": c.efficiency} for c in self.campaigns],
            **({"goals": self.goals.to_dict()} if self.goals is not None else {}),
        }


def decisions_since(fleet: Fleet, last_id: str) -> tuple[list[DecisionRecord], str]:
    """The bids of the ``ce:decisions`` entries after ``last_id``, and the id to continue from."""
    entries: list[tuple[str, dict[str, str]]] = fleet.r.xrange(keys.DECISIONS, f"({last_id}")  # type: ignore[assignment]
    if not entries:
        return [], last_id
    return [record for _id, record in decisions.bids(decisions.parse(entries))], entries[-1][0]


def log_line(record: DecisionRecord) -> str:
    """One docs/market.md decision-log line from a bid of the stream (floats round-trip through repr)."""
    doc: dict[str, Any] = {name: getattr(record, name) for name in LOG_FIELDS}
    return json.dumps(doc, separators=(", ", ": "))


def run(
    fleet: Fleet,
    scenario: Scenario,
    executor: Executor,
    out: IO[str],
    *,
    executor_name: str = "inline",
    on_tick: Callable[[int], None] | None = None,
) -> BacktestReport:
    """Run every tick of ``scenario``, writing the decision log to ``out``; returns the report."""
    prepare(fleet, scenario)
    results = {c.id: CampaignResult(c.id, c.budget) for c in scenario.campaigns}
    vpc = {c.id: c.value_per_conversion for c in scenario.campaigns}
    started = time.perf_counter()
    last_id = "0-0"
    for t in range(scenario.ticks):
        executor.run_tick(t)
        if t % maintenance.EVERY_TICKS == maintenance.EVERY_TICKS - 1:
            # As the live fleet's ce.sweep does: the state stays bounded however long the scenario.
            maintenance.run(fleet, t)
        entries, last_id = decisions_since(fleet, last_id)
        # Workers finish in any order: sort so that every executor writes the same file.
        for entry in sorted(entries, key=lambda e: (e.campaign, e.platform)):
            out.write(log_line(entry) + "\n")
            r = results[entry.campaign]
            r.bids += 1
            r.spend += entry.cost
            r.clicks += entry.clicks
            r.conversions += entry.conversions
            r.value += entry.conversions * vpc[entry.campaign]
            r.waste += entry.waste
            r.throttled += entry.cost >= entry.spend_cap * THROTTLED
        if on_tick is not None:
            on_tick(t)
    ticks.summarize(fleet, scenario.ticks - 1)
    seconds = time.perf_counter() - started
    for spec in scenario.campaigns:
        best = optimum(spec, scenario)
        results[spec.id].optimum_value, results[spec.id].optimum_spend = best.value, best.spend
    report = BacktestReport(
        scenario.name, executor_name, scenario.ticks, seconds, list(results.values()),
        aggressiveness=fleet.settings.aggressiveness,
    )  # fmt: skip
    report.forecast_error = forecast_report(scenario, fleet.settings.forecast_window)
    report.goals = goal_report(scenario, {r.id: (r.spend, r.clicks, r.conversions) for r in results.values()})
    return report


def forecast_report(scenario: Scenario, window: int) -> dict[str, Any]:
    """One-step forecast error (MAPE per metric) of the engine's forecaster and of the naive last value."""
    from common.forecast.forecasts import forecast_error

    series = np.stack([np.stack([s.cpc, s.cvr, s.volume], axis=-1) for s in scenario.platforms.values()])
    err = forecast_error(series, window=window)
    return {"model": err.model, "naive": err.naive}


def write_report(report: BacktestReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default))


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot serialise {type(value).__name__}")
