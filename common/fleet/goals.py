"""Goal progress of the fleet as a whole: how many campaigns with a goal are met, on track or at risk.

Each evaluation adds its campaigns' goal statuses and projected shortfalls to its tick's counters
(``keys.tick_counters``), a fixed set of fields whatever the number of campaigns; the metrics read
them for the last complete tick. Per-campaign figures are in each campaign's state (``goal`` field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from common.engine import Decision, GoalStatus
from common.models import GoalMetric

STATUSES = {s: s.value.replace(" ", "_") for s in GoalStatus}
STATUS_FIELDS = {name: f"goals_{name}" for name in STATUSES.values()}
SHORTFALL_FIELDS = {m.value: f"goals_shortfall_{m.value}" for m in GoalMetric}


def queue_count(pipe: Any, counters: str, decisions: Iterable[Decision]) -> None:
    """Queue adding the goal statuses and shortfalls of ``decisions`` to the tick's ``counters`` hash."""
    statuses: dict[str, int] = {}
    shortfall: dict[str, float] = {}
    for d in decisions:
        goal = d.goal
        if goal is None:
            continue
        name = STATUS_FIELDS[STATUSES[goal.status]]
        statuses[name] = statuses.get(name, 0) + 1
        if goal.shortfall > 0:
            field = SHORTFALL_FIELDS[goal.metric.value]
            shortfall[field] = shortfall.get(field, 0.0) + goal.shortfall
    for name, count in statuses.items():
        pipe.hincrby(counters, name, count)
    for name, amount in shortfall.items():
        pipe.hincrbyfloat(counters, name, amount)


def read(counters: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """Campaigns by goal status and projected shortfall by metric, from a tick's counters."""
    return (
        {name: int(counters.get(field, 0)) for name, field in STATUS_FIELDS.items()},
        {metric: float(counters.get(field, 0.0)) for metric, field in SHORTFALL_FIELDS.items()},
    )
