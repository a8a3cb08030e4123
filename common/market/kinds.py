"""The kinds of market the engine is checked on, and the seeds of each set.

Every kind is a generated scenario (:func:`common.market.generator.generate`) whose shape breaks one
assumption: a cycle shorter than the scenario, several days, a tick a day with a weekly cycle, no
cycle at all, tight budgets in a shocky market, prices that wander and do not come back, many
campaigns on many platforms. The ``tuning`` seeds are the ones choices may be made on; the
``held-out`` seeds are scored only to check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.market.generator import Shape, generate
from common.market.scenario import Scenario

SETS: dict[str, tuple[int, ...]] = {"tuning": (11, 12), "held-out": (9001, 9002)}


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    description: str
    campaigns: int = 60
    platforms: int = 4
    ticks: int = 720
    shock_rate: float = 0.004
    late_flights: float = 0.3
    shape: Shape = field(default_factory=Shape)

    def scenario(self, seed: int, campaigns: int | None = None) -> Scenario:
        return generate(
            campaigns=self.campaigns if campaigns is None else campaigns,
            platforms=self.platforms,
            ticks=self.ticks,
            seed=seed,
            shock_rate=self.shock_rate,
            late_flights=self.late_flights,
            name=f"{self.name}-{seed}",
            shape=self.shape,
        )


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("one-day", "one cycle over the whole scenario (the demo market)"),
        Kind("days", "four days of 180 ticks, a strong daily cycle", shape=Shape(day_ticks=180, cycle=2.0)),
        Kind(
            "weekly",
            "a tick a day for 91 days: a weekly cycle, a trend, shocks",
            ticks=91,
            shock_rate=0.01,
            shape=Shape(day_ticks=7, cycle=1.5, trend=0.5),
        ),
        Kind(
            "flat",
            "no cycle, strong trends in volume and price, a long outage",
            shape=Shape(cycle=0.0, trend=0.8, volume_trend=0.8, outages=1),
        ),
        Kind(
            "stress",
            "tight budgets, shocks and outages, most flights late, three days",
            shock_rate=0.02,
            late_flights=0.7,
            shape=Shape(day_ticks=240, cycle=1.5, budget=(0.05, 0.4)),
        ),
        Kind(
            "wander",
            "prices and conversion rates that wander as random walks, with shocks and a daily cycle",
            shock_rate=0.01,
            shape=Shape(day_ticks=240, wander=0.015),
        ),
        Kind(
            "fleet",
            "500 campaigns on 8 platforms, two days",
            campaigns=500,
            platforms=8,
            shape=Shape(day_ticks=360, cycle=1.5),
        ),
    )
}
