"""Each platform's volume cycle, refitted every few ticks from the volume history and kept in Redis.

Fitting the cycle (:func:`common.forecast.season.fit_cycle`: GLS with AR(1) prewhitening and Huber
weights) takes a few numpy passes over a whole season of volumes, and its iterations leave no
sufficient statistics to update tick by tick. So it is refitted every ``every`` ticks and the fit
kept in ``ce:cycles``; the ticks in between use the last one. A season moves little in ``every``
ticks (1/48 of it by default), and the outlook is still taken from the current tick along the
cycle, so only the cycle's shape is up to ``every`` ticks old.

The fit a tick uses is fixed by the tick alone: platform ``i`` of ``n`` refits at the ticks ``r``
with ``r = i * every // n (mod every)`` (staggered, so that a tick refits one platform at most once
``every >= n``), to the volumes of the season before ``r``. So it only sees ticks before the one
it forecasts, and is the same whichever process computes it first: the tick task, an evaluation
that found the forecast cache empty, an inline or a Celery backtest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from common import keys
from common.fleet.feed import FeedStore
from common.forecast.season import fit_cycle
from common.redis_conn import Client, Fields, store_call

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cycle:
    """A platform's cycle fitted at ``tick`` to the ``season`` ticks before it; ``coef`` is its
    ``(a, b)``, None with too few observations."""

    tick: int
    season: int
    coef: tuple[float, float] | None

    def to_json(self) -> str:
        return json.dumps({"tick": self.tick, "season": self.season, "coef": self.coef})

    @classmethod
    def from_json(cls, text: str) -> Cycle:
        """Parse the document; anything malformed raises ``ValueError``."""
        try:
            doc = json.loads(text)
            coef = doc["coef"]
            return cls(int(doc["tick"]), int(doc["season"]), None if coef is None else (float(coef[0]), float(coef[1])))
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"not a cycle document: {type(exc).__name__} {exc}") from exc


def refit_tick(tick: int, every: int, platform: int, platforms: int) -> int:
    """The newest refit tick of platform number ``platform`` (of ``platforms``) at or before ``tick``."""
    offset = platform * every // max(platforms, 1)
    return tick - (tick - offset) % every


@store_call("fit the volume cycles")
def cycles(
    client: Client, feed: FeedStore, platform_ids: Sequence[str], tick: int, season: int, every: int
) -> dict[str, tuple[float, float] | None]:
    """The cycle ``(a, b)`` of each platform for forecasting ``tick``: the stored fit, or a refit."""
    if season <= 0 or not platform_ids:
        return {}
    stored: list[str | None] = client.hmget(keys.CYCLES, list(platform_ids))  # type: ignore[assignment]
    out: dict[str, tuple[float, float] | None] = {}
    fresh: Fields = {}
    for i, (pid, doc) in enumerate(zip(platform_ids, stored, strict=True)):
        due = refit_tick(tick, every, i, len(platform_ids))
        kept = _parse(doc)
        if kept is not None and kept.tick == due and kept.season == season:
            out[pid] = kept.coef
            continue
        volume = feed.volumes([pid], due - season, due - 1)[0]
        cycle = Cycle(due, season, fit_cycle(volume, due - season, season))
        out[pid] = cycle.coef
        # A late computation for an older tick does not replace a newer fit.
        if kept is None or kept.season != season or kept.tick < due:
            fresh[pid] = cycle.to_json()
        log.debug("volume cycle refitted", extra={"tick": tick, "platform": pid})
    if fresh:
        client.hset(keys.CYCLES, mapping=fresh)
    return out


def _parse(doc: str | None) -> Cycle | None:
    if doc is None:
        return None
    try:
        return Cycle.from_json(doc)
    except ValueError:
        return None
