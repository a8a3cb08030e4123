"""Everything one process needs to run ticks and evaluations, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis

from common.clock import Clock
from common.feed import FeedStore, SimulatedFeed
from common.generator import generate
from common.ledger import Ledger
from common.platforms import PlatformAdapter, SimulatedPlatforms
from common.redis_conn import connect
from common.scenario import Scenario
from common.settings import Settings
from common.store import CampaignStore

log = logging.getLogger(__name__)

# Length of the market generated when no scenario file is given: two hours of 2-second ticks.
DEFAULT_MARKET_TICKS = 3600


def load_market(settings: Settings) -> Scenario:
    """The simulated market: the configured scenario file, else one generated from the seed."""
    if settings.scenario is not None:
        return Scenario.load(settings.scenario)
    return generate(campaigns=0, platforms=4, ticks=DEFAULT_MARKET_TICKS, seed=settings.market_seed)


@dataclass
class Fleet:
    settings: Settings
    r: redis.Redis
    market: Scenario
    platforms: PlatformAdapter
    # Per-process memo of values that never change once written (the forecasts of a tick).
    memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, market: Scenario | None = None) -> Fleet:
        market = market or load_market(settings)
        return cls(settings, connect(settings.state_url), market, SimulatedPlatforms(market))

    @property
    def season(self) -> int:
        """Ticks in one cycle of the market's volume; 0 when the forecasts model no cycle."""
        configured = self.settings.season_ticks
        return self.market.ticks if configured is None else configured

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
        return SimulatedFeed(self.market)

    @cached_property
    def clock(self) -> Clock:
        return Clock(self.r, self.settings.tick_seconds)

    def register_market(self) -> None:
        """Make the simulated market's platforms known to the campaign store."""
        self.store.register_platforms(series.info for series in self.market.platforms.values())
