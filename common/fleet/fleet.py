"""Everything one process needs to run ticks and evaluations, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from common.fleet import eviction
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
        """The fleet of one process; refused (``SettingsError``) on a Redis that may evict keys."""
        scenario = scenario or load_scenario(settings)
        client = connect(settings.state_url)
        eviction.check(client)
        return cls(settings, client, scenario, SimulatedPlatforms(scenario))

    @property
    def season(self) -> int:
        """Ticks in one cycle of the market's volume; 0 when the forecasts model no cycle."""
        configured = self.settings.season_ticks
        return self.scenario.ticks if configured is None else configured

    @property
    def cycle_refit_ticks(self) -> int:
        """Ticks between refits of each platform's volume cycle (common/fleet/cycles.py)."""
        configured = self.settings.cycle_refit_ticks
        return max(1, self.season // 48) if configured is None else configured

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
