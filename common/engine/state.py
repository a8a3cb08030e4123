"""What the decision engine reads and returns: plain, JSON-serialisable values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from common.models import Bid, CampaignSpec, GoalMetric


class NoBid(StrEnum):
    """Why a campaign places no bid at a tick."""

    OUTSIDE_FLIGHT = "outside flight"
    NO_FLIGHT_END = "flight has no end tick and no ticks_left was given"
    BUDGET_SPENT = "budget spent"
    NO_FORECAST = "no forecast for any listed platform"
    NO_VALUE = "no platform has positive expected value at the current multiplier"
    GOAL_MET = "goal met"


@dataclass(frozen=True, slots=True)
class PacingState:
    """The engine's memory of one campaign, returned updated by every decision and stored by the caller.

    ``lam`` is the pacing multiplier: bids are ``value_per_click / (1 + lam)``. ``bias`` is the
    smoothed ratio of realised to expected spend, which corrects the spend model. ``tick``,
    ``spent`` and ``expected`` describe the last decision, so that the next one can compare what
    was expected with what the ledger then charged.
    """

    lam: float = 0.0
    bias: float = 1.0
    tick: int = -1
    spent: float = 0.0
    expected: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # Spelled out, in field order: dataclasses.asdict deep-copies each field, a tenth of an
        # evaluation's own CPU time when it ran for every campaign and tick.
        return {"lam": self.lam, "bias": self.bias, "tick": self.tick, "spent": self.spent, "expected": self.expected}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PacingState:
        if not data:
            return cls()
        state = cls(
            lam=float(data.get("lam", 0.0)),
            bias=float(data.get("bias", 1.0)),
            tick=int(data.get("tick", -1)),
            spent=float(data.get("spent", 0.0)),
            expected=float(data.get("expected", 0.0)),
        )
        if not all(math.isfinite(x) for x in (state.lam, state.bias, state.spent, state.expected)):
            return cls()  # a corrupt state must not poison bids: start afresh
        return state


@dataclass(frozen=True, slots=True)
class CampaignState:
    """One campaign at the start of a tick.

    ``spent``, ``clicks`` and ``conversions`` are the campaign's own outcomes of earlier ticks.
    ``ticks_left`` counts the ticks of its flight from ``tick`` on (``tick`` included); it is
    derived from ``spec.end_tick`` when that is set and must be given otherwise.
    """

    spec: CampaignSpec
    tick: int
    remaining: float
    spent: float = 0.0
    clicks: float = 0.0
    conversions: float = 0.0
    ticks_left: int | None = None
    pacing: PacingState = field(default_factory=PacingState)

    @property
    def flight_ticks_left(self) -> int:
        if self.spec.end_tick is not None:
            left = self.spec.end_tick - self.tick
            return left if self.ticks_left is None else min(left, self.ticks_left)
        return 0 if self.ticks_left is None else self.ticks_left


class GoalStatus(StrEnum):
    MET = "met"
    ON_TRACK = "on track"
    AT_RISK = "at risk"


@dataclass(frozen=True, slots=True)
class GoalProgress:
    """Progress towards a campaign's goal: so far, and projected to the end of its flight.

    ``projected`` is what the plan expects by the flight's end: the most the budget buys when that
    falls short of ``target``, so ``shortfall`` says early how far off the goal is.
    """

    metric: GoalMetric
    target: float
    achieved: float
    projected: float

    @property
    def status(self) -> GoalStatus:
        if self.achieved >= self.target:
            return GoalStatus.MET
        return GoalStatus.ON_TRACK if self.projected >= self.target * (1 - GOAL_TOLERANCE) else GoalStatus.AT_RISK

    @property
    def shortfall(self) -> float:
        return max(0.0, self.target - self.projected) if self.status is GoalStatus.AT_RISK else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric.value,
            "target": self.target,
            "achieved": self.achieved,
            "projected": self.projected,
            "status": self.status.value,
            "shortfall": self.shortfall,
        }


# A projection within this share of the target counts as on track: the plan aims at the target
# itself, and the solver's and the float sums' last digits must not flip the status.
GOAL_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one campaign and tick.

    ``planned`` is the spend the plan expects at this tick and ``expected`` that of the bids
    actually placed (they differ when a platform is down). ``reason`` is set when nothing is bid.
    """

    bids: tuple[Bid, ...]
    pacing: PacingState
    reason: NoBid | None = None
    planned: float = 0.0
    expected: float = 0.0
    target_cpa_binds: bool = False
    goal: GoalProgress | None = None

    @property
    def lam(self) -> float:
        return self.pacing.lam
