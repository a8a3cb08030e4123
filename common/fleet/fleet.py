"""Everything one process needs to run ticks and evaluations, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from common.fleet.clock import Clock
from common.fleet.feed import FeedStore, SimulatedFeed
from common.fleet.store import CampaignStore
from common.ledger import Ledger
from common.market.generator import generate
from common.market.platforms import PlatformAdapter, SimulatedPlatforms
from common.market.scenario import Scenario
from common.redis_conn import Client, connect
from common.settings import Settings

log = logging.getLogger(__name__)

# Length of the market generated when no scenario file is given: two hours of 2-second ticks.
DEFAULT_MARKET_TICKS = 3600
# Ticks between refits of a learnt cycle: its period is not known in advance to take a share of.
LEARNT_REFIT_TICKS = 8


def load_scenario(settings: Settings) -> Scenario:
    """The simulated market: the configured scenario file, else one generated from the seed."""
    if settings.scenario is not None:
        return Scenario.load(settings.scenario)
    return generate(campaigns=0, platforms=4, ticks=DEFAULT_MARKET_TICKS, seed=settings.market_seed)


@dataclass
class Fleet:
    settings: Settings
    r: Client
    scenario: Scenario  # the simulated market
    platforms: PlatformAdapter
    # Per-process memo of values that never change once written (the forecasts of a tick).
    memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, scenario: Scenario | None = None) -> Fleet:
        scenario = scenario or load_scenario(settings)
        return cls(settings, connect(settings.state_url), scenario, SimulatedPlatforms(scenario))

    @property
    def season(self) -> int | None:
        """Ticks in one cycle of the market's volume as set (0: none), or None: learnt from the feed."""
        return self.settings.season_ticks

    @property
    def cycle_hints(self) -> tuple[int, ...]:
        """Periods the volume cycle is tested at besides the scan: a day and a week of ticks, and
        the simulated market's length, at which its feed repeats."""
        day = round(86_400 / self.settings.tick_seconds)
        return (self.scenario.ticks, day, 7 * day)

    @property
    def cycle_refit_ticks(self) -> int:
        """Ticks between refits of each platform's volume cycle (common/fleet/cycles.py)."""
        configured = self.settings.cycle_refit_ticks
        if configured is not None:
            return configured
        return LEARNT_REFIT_TICKS if not self.season else max(1, self.season // 48)

    @cached_property
    def store(self) -> CampaignStore:
        return CampaignStore(self.r)

    @cached_property
    def ledger(self) -> Ledger:
        return self.store.ledger

    @cached_property
    def feed(self) -> FeedStore:
        return FeedStore(self.r)

    @cached_property
    def simulated_feed(self) -> SimulatedFeed:
        return SimulatedFeed(self.scenario)

    @cached_property
    def clock(self) -> Clock:
        return Clock(self.r, self.settings.tick_seconds)

    def register_market(self) -> None:
        """Make the simulated market's platforms known to the campaign store."""
        self.store.register_platforms(series.info for series in self.scenario.platforms.values())
