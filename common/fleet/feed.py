"""The metrics feed: each platform's CPC, CVR and volume per tick, published after the tick ends.

``FeedStore`` keeps what was published in Redis (idempotently: a (platform, tick) is written once)
and reads the sliding windows the forecasts need. ``SimulatedFeed`` plays a scenario's true series
into it, one tick at a time, as a real platform connector would post them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from common import keys
from common.errors import InvalidInput
from common.market.scenario import Scenario
from common.models import FloatArray, PlatformFigures
from common.redis_conn import Client, store_call

METRICS = ("cpc", "cvr", "volume")


class FeedStore:
    def __init__(self, client: Client) -> None:
        self.r = client

    @store_call("publish feed")
    def publish(self, tick: int, figures: Mapping[str, PlatformFigures]) -> int:
        """Store figures of one tick; returns how many (platform, tick) pairs were new."""
        if tick < 0:
            raise InvalidInput.one("tick", "must be >= 0")
        pipe = self.r.pipeline(transaction=False)
        for pid, fig in figures.items():
            pipe.hsetnx(keys.feed(pid), str(tick), fig.model_dump_json())
        return sum(int(x) for x in pipe.execute())

    @store_call("read feed")
    def window(self, platform_ids: Sequence[str], last_tick: int, size: int) -> FloatArray:
        """Figures of ticks ``last_tick - size + 1 .. last_tick``: shape (platforms, size, 3), NaN where missing."""
        ticks = [str(t) for t in range(last_tick - size + 1, last_tick + 1)]
        out = np.full((len(platform_ids), size, len(METRICS)), np.nan)
        if size <= 0 or not platform_ids:
            return out
        pipe = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            pipe.hmget(keys.feed(pid), ticks)
        for i, values in enumerate(pipe.execute()):
            for j, doc in enumerate(values):
                if doc:
                    fig = json.loads(doc)
                    out[i, j] = (fig["cpc"], fig["cvr"], fig["volume"])
        return out

    @store_call("trim feed")
    def trim(self, platform_ids: Sequence[str], before_tick: int, span: int) -> None:
        """Forget figures of ``span`` ticks before ``before_tick`` (older ones were trimmed already)."""
        old = [str(t) for t in range(max(0, before_tick - span), max(0, before_tick))]
        if not old:
            return
        pipe = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            pipe.hdel(keys.feed(pid), *old)
        pipe.execute()


class SimulatedFeed:
    """Plays a scenario's true series as the platforms' published figures."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def figures(self, tick: int) -> dict[str, PlatformFigures]:
        """True figures of ``tick``; past the scenario's end the series repeat from its start."""
        index = tick % self.scenario.ticks
        return {pid: series.figures(index) for pid, series in self.scenario.platforms.items()}
