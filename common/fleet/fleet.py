"""Everything one process needs to run ticks and evaluations, built once from the settings."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from common.fleet import adapters, eviction
from common.fleet.clock import Clock
from common.fleet.feed import FeedStore, SimulatedFeed
from common.fleet.store import CampaignStore
from common.ledger import Ledger
from common.market.charges import ChargeLog
from common.market.generator import generate
from common.market.platforms import FaultyPlatforms, LateOutcomes, PlatformAdapter
from common.market.scenario import Scenario
from common.redis_conn import Client, connect, without_retries
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
    # This machine's clock; the fleet's time is it plus the offset measured against Redis (fleet/clock.py).
    local_time: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, scenario: Scenario | None = None) -> Fleet:
        """The fleet of one process; refused (``SettingsError``) on a Redis that may evict keys."""
        scenario = scenario or load_scenario(settings)
        client = connect(settings.state_url)
        try:
            platforms = adapters.build(settings, client, scenario)
        except BaseException:
            client.close()
            raise
        if settings.platform_charge_log is not None:
            platforms = ChargeLog(platforms, settings.platform_charge_log, reply_ms=settings.platform_reply_ms)
        if settings.platform_faults:
            log.warning("platform faults injected: %s", settings.platform_faults)
            platforms = FaultyPlatforms(platforms, settings.platform_faults)
        eviction.check(client)
        return cls(settings, client, scenario, platforms)

    @property
    def collects(self) -> bool:
        """Whether the adapter may report outcomes after its reply (``LateOutcomes``, common/fleet/late.py)."""
        return isinstance(self.platforms, LateOutcomes)

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
        return Clock(self.r, self.settings.tick_seconds, local=self.local_time)

    @cached_property
    def once(self) -> Client:
        """The same Redis without client retries: for increments and appends, which a retry could double."""
        return without_retries(self.r)

    def close(self) -> None:
        """Close this process's Redis clients."""
        if "once" in self.__dict__ and self.once is not self.r:
            self.once.close()
        if "clock" in self.__dict__:
            self.clock.close()
        self.r.close()

    def register_market(self) -> None:
        """Make the simulated market's platforms known to the campaign store."""
        self.store.register_platforms(series.info for series in self.scenario.platforms.values())
