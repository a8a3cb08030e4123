"""Paper trading: ``CE_PLATFORM_ADAPTER=simulated`` with ``CE_FEED=external``.

The fleet decides on the figures posted to ``POST /feed`` as it would for real, and nothing is sent
anywhere: each tick's bids are cleared with the market model of docs/market.md once that tick's
figures arrive (figures of a tick are posted after it ends), with the price spread of the
platform's registry entry. Until then the bids are pending (common/fleet/late.py): their
reservations stay held, and the tick task asks again each tick. A tick whose figures never come is
charged in full by the sweeper after its grace, as any platform that never reports.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.fleet.feed import FeedStore
from common.fleet.store import CampaignStore
from common.market.platforms import PENDING, Order, clear
from common.models import Outcome


class PaperPlatforms:
    def __init__(self, feed: FeedStore, store: CampaignStore) -> None:
        self.feed = feed
        self.store = store

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome | None]:
        """Placed on paper: every outcome waits for the tick's figures."""
        return [PENDING] * len(orders)

    def collect(self, tick: int, orders: Sequence[Order]) -> list[Outcome | None]:
        out: list[Outcome | None] = [PENDING] * len(orders)
        platforms = sorted({o.bid.platform for o in orders})
        figures = self.feed.figures(platforms, tick)
        if not figures:
            return out
        registry = self.store.platforms()
        for pid, fig in figures.items():
            info = registry.get(pid)
            if info is None:
                continue  # removed since: its bids stay pending until the sweeper closes them
            indices = [i for i, o in enumerate(orders) if o.bid.platform == pid]
            cleared = clear(
                fig,
                info.price_sigma,
                [
                    (o.bid.bid, o.bid.spend_cap, o.campaign.platforms.get(pid, 0.0), o.campaign.value_per_conversion)
                    for o in (orders[i] for i in indices)
                ],
            )
            for i, outcome in zip(indices, cleared, strict=True):
                out[i] = outcome
        return out
