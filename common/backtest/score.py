"""Scoring a decision log against its scenario (docs/market.md, "Scoring").

Every bid of the log is cleared again with the market model (``common.market.model``), so the score
does not trust the outcomes the engine wrote: it reports those that differ (mismatches), the rules
the bids break (violations), and the value they won against the hindsight optimum
(``common.backtest.hindsight``) and against a naive baseline that anyone could run.

Pure: a scenario and the lines of a log in, a report out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.backtest.hindsight import optimum
from common.errors import InvalidInput
from common.market.model import outcomes
from common.market.scenario import Scenario
from common.models import CampaignSpec

# How far an outcome the engine wrote may differ from the market's before it is a mismatch, and the
# slack of the budget and max_bid rules: float rounding, not money.
REL_TOL = 1e-6
ABS_TOL = 1e-9
# Rule breaks and mismatches listed in full in a report; the rest are counted.
LISTED = 10


class LogLine(BaseModel):
    """One bid of a decision log; the outcomes are the engine's own, checked against the market."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    tick: int = Field(ge=0)
    campaign: str
    platform: str
    bid: float
    spend_cap: float
    cost: float | None = None
    clicks: float | None = None
    conversions: float | None = None


@dataclass(frozen=True)
class PlacedBid:
    line: int
    bid: LogLine


def read_log(lines: Iterable[str]) -> list[PlacedBid]:
    """The bids of a decision log that can spend (bid and cap above 0); ``InvalidInput`` names the line."""
    placed = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = LogLine.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc, prefix=f"decisions line {number}: ") from None
        if line.bid > 0 and line.spend_cap > 0:
            placed.append(PlacedBid(number, line))
    return placed


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= max(ABS_TOL, REL_TOL * max(abs(a), abs(b)))


@dataclass
class CampaignScore:
    campaign: str
    budget: float
    spend: float = 0.0
    value: float = 0.0
    clicks: float = 0.0
    waste: float = 0.0
    optimum_value: float = 0.0
    optimum_spend: float = 0.0
    baseline_value: float = 0.0

    @property
    def efficiency(self) -> float | None:
        return self.value / self.optimum_value if self.optimum_value > 0 else None


@dataclass
class Score:
    scenario: str
    campaigns: list[CampaignScore]
    bids: int
    violations: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations and not self.mismatches

    def report(self, per_campaign: bool = False) -> dict[str, Any]:
        def total(name: str) -> float:
            return float(sum(getattr(c, name) for c in self.campaigns))

        budget, spend, best = total("budget"), total("spend"), total("optimum_value")
        effs = sorted(e for c in self.campaigns if (e := c.efficiency) is not None)
        report: dict[str, Any] = {
            "scenario": self.scenario,
            "campaigns": len(self.campaigns),
            "bids": self.bids,
            "efficiency": total("value") / best if best else None,
            "baseline_efficiency": total("baseline_value") / best if best else None,
            "efficiency_p10": effs[len(effs) // 10] if effs else None,
            "efficiency_min": effs[0] if effs else None,
            "budget_use": spend / budget if budget else None,
            "optimum_budget_use": total("optimum_spend") / budget if budget else None,
            "waste_share": total("waste") / spend if spend else 0.0,
            "violations": len(self.violations),
            "mismatches": len(self.mismatches),
            "first_violations": self.violations[:LISTED],
            "first_mismatches": self.mismatches[:LISTED],
        }
        if per_campaign:
            report["per_campaign"] = [{**c.__dict__, "efficiency": c.efficiency} for c in self.campaigns]
        return report


def _end(spec: CampaignSpec, scenario: Scenario) -> int:
    return scenario.ticks if spec.end_tick is None else spec.end_tick


def _rule_breaks(spec: CampaignSpec, scenario: Scenario, placed: PlacedBid) -> list[str]:
    b = placed.bid
    found = []
    if not spec.start_tick <= b.tick < _end(spec, scenario):
        found.append(f"bids at tick {b.tick} outside its flight [{spec.start_tick},{_end(spec, scenario)})")
    if spec.max_bid is not None and b.bid > spec.max_bid * (1 + REL_TOL):
        found.append(f"bid {b.bid} above max_bid {spec.max_bid}")
    return [f"line {placed.line}: {spec.id} {what}" for what in found]


def _clear(spec: CampaignSpec, scenario: Scenario, placed: list[PlacedBid]) -> tuple[np.ndarray, ...]:
    """Cost, clicks, conversions and waste of one campaign's bids, by the market model."""
    rows = [(p.bid, scenario.platforms[p.bid.platform]) for p in placed]
    ticks = [min(b.tick, scenario.ticks - 1) for b, _ in rows]
    return outcomes(
        [spec.platforms[b.platform] * s.volume[t] for (b, s), t in zip(rows, ticks, strict=True)],
        [s.cpc[t] for (_, s), t in zip(rows, ticks, strict=True)],
        [s.price_sigma for _, s in rows],
        [s.cvr[t] for (_, s), t in zip(rows, ticks, strict=True)],
        spec.value_per_conversion,
        [b.bid for b, _ in rows],
        [b.spend_cap for b, _ in rows],
    )


def score(scenario: Scenario, log: Iterable[str]) -> Score:
    """Score the lines of a decision log (JSON Lines) against ``scenario``."""
    specs = {c.id: c for c in scenario.campaigns}
    violations: list[str] = []
    mismatches: list[str] = []
    by_campaign: dict[str, list[PlacedBid]] = defaultdict(list)
    seen: set[tuple[str, str, int]] = set()
    for placed in read_log(log):
        b = placed.bid
        spec = specs.get(b.campaign)
        if spec is None:
            violations.append(f"line {placed.line}: unknown campaign {b.campaign}")
            continue
        violations += _rule_breaks(spec, scenario, placed)
        if b.platform not in spec.platforms or b.platform not in scenario.platforms:
            violations.append(f"line {placed.line}: {spec.id} bids on platform {b.platform} it does not list")
            continue
        if (b.campaign, b.platform, b.tick) in seen:
            violations.append(f"line {placed.line}: {spec.id} bids twice on {b.platform} at tick {b.tick}")
        seen.add((b.campaign, b.platform, b.tick))
        by_campaign[b.campaign].append(placed)

    baseline = baseline_values(scenario)
    results = []
    for spec in scenario.campaigns:
        result = CampaignScore(spec.id, spec.budget, baseline_value=float(baseline[spec.id]))
        best = optimum(spec, scenario)
        result.optimum_value, result.optimum_spend = best.value, best.spend
        bids = sorted(by_campaign.get(spec.id, []), key=lambda p: p.bid.tick)
        if bids:
            cost, clicks, conversions, waste = _clear(spec, scenario, bids)
            for i, p in enumerate(bids):
                for name, market in (("cost", cost[i]), ("clicks", clicks[i]), ("conversions", conversions[i])):
                    written = getattr(p.bid, name)
                    if written is not None and not _close(written, float(market)):
                        mismatches.append(f"line {p.line}: {name} {written} but the market gives {market:.10g}")
            overspent = _first_overspend(spec, [p.bid.tick for p in bids], cost)
            if overspent is not None:
                violations.append(overspent)
            result.spend, result.clicks, result.waste = float(cost.sum()), float(clicks.sum()), float(waste.sum())
            result.value = float(conversions.sum()) * spec.value_per_conversion
        results.append(result)
    return Score(scenario.name, results, sum(len(v) for v in by_campaign.values()), violations, mismatches)


def _first_overspend(spec: CampaignSpec, ticks: list[int], cost: np.ndarray) -> str | None:
    """Rule 1: the cost up to the end of each tick within the budget (ticks sorted)."""
    per_tick: dict[int, float] = defaultdict(float)
    for t, c in zip(ticks, cost, strict=True):
        per_tick[t] += float(c)
    limit = spec.budget * (1 + REL_TOL) + ABS_TOL
    cumulative = np.cumsum(list(per_tick.values()))
    over = np.flatnonzero(cumulative > limit)
    if not over.size:
        return None
    first = list(per_tick)[int(over[0])]
    return f"{spec.id}: spend {cumulative.max():.6f} exceeds budget {spec.budget} (first at tick {first})"


def baseline_values(scenario: Scenario) -> dict[str, float]:
    """Value won by the naive rule of docs/market.md, campaign by campaign.

    At every tick ``t >= 1`` of its flight a campaign bids on one platform: the listed one (audience
    above 0) whose last published click paid best, ``vpc * cvr[t-1] - cpc[t-1]``, the first in the
    scenario's order on a tie, and only while that is above 0. It bids the click's last-seen value
    ``vpc * cvr[t-1]`` (capped at ``max_bid``) with a spend cap of what remains of its budget over the
    ticks left in its flight. All campaigns advance together, one tick at a time.
    """
    pids = list(scenario.platforms)
    campaigns = scenario.campaigns
    n = len(campaigns)
    if n == 0:
        return {}
    series = {name: np.stack([getattr(scenario.platforms[p], name) for p in pids]) for name in ("cpc", "cvr", "volume")}
    sigma = np.array([scenario.platforms[p].price_sigma for p in pids])
    audience = np.array([[c.platforms.get(p, 0.0) for p in pids] for c in campaigns])
    vpc = np.array([c.value_per_conversion for c in campaigns])
    max_bid = np.array([np.inf if c.max_bid is None else c.max_bid for c in campaigns])
    start = np.array([c.start_tick for c in campaigns])
    end = np.array([_end(c, scenario) for c in campaigns])
    remaining = np.array([c.budget for c in campaigns])
    value = np.zeros(n)
    rows = np.arange(n)
    for t in range(1, scenario.ticks):
        live = (start <= t) & (t < end)
        if not live.any():
            continue
        seen_value = vpc[:, None] * series["cvr"][:, t - 1][None, :]
        gain = np.where(audience > 0, seen_value - series["cpc"][:, t - 1][None, :], -np.inf)
        chosen = gain.argmax(axis=1)
        bidding = live & (gain[rows, chosen] > 0)
        bid = np.where(bidding, np.minimum(seen_value[rows, chosen], max_bid), 0.0)
        cap = np.where(bidding, remaining / np.maximum(end - t, 1), 0.0)
        cost, _, conversions, _ = outcomes(
            audience[rows, chosen] * series["volume"][chosen, t],
            series["cpc"][chosen, t],
            sigma[chosen],
            series["cvr"][chosen, t],
            vpc,
            bid,
            cap,
        )
        remaining -= cost
        value += conversions * vpc
    return {c.id: float(v) for c, v in zip(campaigns, value, strict=True)}


def score_files(scenario_path: Path, log_path: Path) -> Score:
    scenario = Scenario.load(scenario_path)
    try:
        with open(log_path) as fh:
            return score(scenario, fh)
    except OSError as exc:
        raise InvalidInput.one("decisions", f"cannot read {log_path}: {exc.strerror}") from None


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2)
