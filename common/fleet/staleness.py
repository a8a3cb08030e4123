"""Whether each platform's feed keeps up: its newest figures against the tick under way.

Figures of a tick are published after it ends, so at tick t the newest can be of t - 1 at best, and
of t - 2 while a connector posts t - 1's. A platform whose newest figures are more than
``CE_FEED_STALE_TICKS`` ticks behind the tick under way is stale: it is still forecast from what it
has (the forecasts extrapolate over the gap, common/forecast/forecasts.py), and the tick's cached
forecasts, ``/health``, the dashboard and the metrics say which feed is stale and since which tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common.fleet.feed import FeedStore


@dataclass(frozen=True, slots=True)
class FeedLag:
    """One platform's feed as of ``tick``: its newest figures and whether they count as stale."""

    platform: str
    tick: int
    newest: int | None  # None: no figures published yet
    stale_ticks: int

    @property
    def lag(self) -> int | None:
        """Ticks between the tick under way and the newest figures (1 is as fresh as a feed can be)."""
        return None if self.newest is None else self.tick - self.newest

    @property
    def stale(self) -> bool:
        return self.newest is None or self.tick - self.newest > self.stale_ticks

    @property
    def stale_since(self) -> int | None:
        """The first tick at which these figures counted as stale; None when fresh or never published."""
        if not self.stale or self.newest is None:
            return None
        return self.newest + self.stale_ticks + 1

    def describe(self) -> str:
        if self.newest is None:
            return f"feed of platform {self.platform} is stale: no figures published yet"
        return (
            f"feed of platform {self.platform} is stale since tick {self.stale_since}: its newest figures are of "
            f"tick {self.newest}, {self.lag} ticks behind"
        )


def lags(feed: FeedStore, platform_ids: Sequence[str], tick: int, stale_ticks: int) -> dict[str, FeedLag]:
    """Each platform's feed as of ``tick``, in one round trip."""
    return {pid: FeedLag(pid, tick, newest, stale_ticks) for pid, newest in feed.newest(platform_ids).items()}
