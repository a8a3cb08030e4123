"""Each platform's volume cycle and the base of its figures, refitted every few ticks and kept in Redis.

By default the cycle is learnt from the feed (:func:`common.forecast.detect.learn`): whether the
volume has one, its period, and its harmonic, from the volume history in the feed's ring (up to
``VOLUME_HISTORY_TICKS`` ticks, read as block means past a few thousand, so a refit's cost does not
grow with the feed). ``CE_SEASON_TICKS`` overrides it: a period fitted from the first ticks on
(:func:`common.forecast.season.fit_cycle` over the last such period), or 0 for none.

With the cycle, each refit fits the base of the platform's CPC, CVR and volume
(:func:`common.forecast.base.fit_base`, over the last ``HISTORY_TICKS`` ticks of the feed and with
the cycle's period), from which every tick's forecast draws the path of the rest of a flight.

A refit takes a few numpy passes and is not worth doing every tick: it is redone every ``every``
ticks and kept in ``ce:cycles``; the ticks in between use the last one. The outlook is still taken
from the current tick along the cycle, so only the cycle's shape is up to ``every`` ticks old.

The fit a tick uses is fixed by the tick alone: platform ``i`` of ``n`` refits at the ticks ``r``
with ``r = i * every // n (mod every)`` (staggered, so that a tick refits one platform at most once
``every >= n``), to the volumes before ``r``. So it only sees ticks before the one it forecasts,
and is the same whichever process computes it first: the tick task, an evaluation that found the
forecast cache empty, an inline or a Celery backtest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from common import keys
from common.fleet.feed import VOLUME_HISTORY_TICKS, FeedStore
from common.forecast.base import HISTORY_TICKS, PlatformBase, fit_base
from common.forecast.detect import learn
from common.forecast.season import PlatformCycle, fit_cycle
from common.redis_conn import Client, Fields, store_call

log = logging.getLogger(__name__)

LEARNT = 0  # the ``season`` of a stored cycle that was learnt from the feed
NONE = -1  # the ``season`` of a fit made with no cycle (``CE_SEASON_TICKS=0``)


@dataclass(frozen=True, slots=True)
class Cycle:
    """A platform's cycle fitted at ``tick`` to the volumes before it; ``season`` is the period set
    by ``CE_SEASON_TICKS`` or ``LEARNT``; ``cycle`` None where no cycle was found or fitted."""

    tick: int
    season: int
    cycle: PlatformCycle | None
    base: PlatformBase | None = None

    def to_json(self) -> str:
        found = self.cycle
        return json.dumps(
            {
                "tick": self.tick,
                "season": self.season,
                "period": None if found is None else found.period,
                "coef": None if found is None else [found.a, found.b],
                "base": None if self.base is None else self.base.to_dict(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Cycle:
        """Parse the document; anything malformed raises ``ValueError``."""
        try:
            doc = json.loads(text)
            coef, period = doc["coef"], doc["period"]
            found = None if coef is None else PlatformCycle(int(period), float(coef[0]), float(coef[1]))
            base = PlatformBase.from_dict(doc["base"]) if doc.get("base") else None
            return cls(int(doc["tick"]), int(doc["season"]), found, base)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a cycle document: {type(exc).__name__} {exc}") from exc


def refit_tick(tick: int, every: int, platform: int, platforms: int) -> int:
    """The newest refit tick of platform number ``platform`` (of ``platforms``) at or before ``tick``."""
    offset = platform * every // max(platforms, 1)
    return tick - (tick - offset) % every


@store_call("fit the volume cycles")
def fits(
    client: Client,
    feed: FeedStore,
    platform_ids: Sequence[str],
    tick: int,
    season: int | None,
    every: int,
    hints: Sequence[int] = (),
) -> dict[str, Cycle]:
    """The cycle and base of each platform for forecasting ``tick``: the stored fit, or a refit.

    ``season`` None learns each platform's cycle from the feed (``hints`` are candidate periods),
    a positive one fits a cycle of that period, 0 models none.
    """
    if not platform_ids:
        return {}
    code = LEARNT if season is None else season if season > 0 else NONE
    stored: list[str | None] = client.hmget(keys.CYCLES, list(platform_ids))  # type: ignore[assignment]
    out: dict[str, Cycle] = {}
    fresh: Fields = {}
    for i, (pid, doc) in enumerate(zip(platform_ids, stored, strict=True)):
        due = refit_tick(tick, every, i, len(platform_ids))
        kept = _parse(doc)
        if kept is not None and kept.tick == due and kept.season == code:
            out[pid] = kept
            continue
        found = _refit(feed, pid, due, season, hints)
        cycle = Cycle(due, code, found, _base(feed, pid, due, found))
        out[pid] = cycle
        # A late computation for an older tick does not replace a newer fit.
        if kept is None or kept.season != code or kept.tick < due:
            fresh[pid] = cycle.to_json()
        log.debug("volume cycle refitted", extra={"tick": tick, "platform": pid})
    if fresh:
        client.hset(keys.CYCLES, mapping=fresh)
    return out


def _base(feed: FeedStore, pid: str, due: int, cycle: PlatformCycle | None) -> PlatformBase | None:
    first = max(0, due - HISTORY_TICKS)
    if due <= first:
        return None
    history = feed.window([pid], due - 1, due - first)[0]
    period = 0 if cycle is None else cycle.period
    return fit_base(history, first, period, None if cycle is None else cycle.coef)


def _refit(feed: FeedStore, pid: str, due: int, season: int | None, hints: Sequence[int]) -> PlatformCycle | None:
    if season == 0:
        return None
    if season is not None:
        coef = fit_cycle(feed.volumes([pid], due - season, due - 1)[0], due - season, season)
        return None if coef is None else PlatformCycle(season, *coef)
    first = max(0, due - VOLUME_HISTORY_TICKS)
    return learn(feed.volumes([pid], first, due - 1)[0], first, hints=hints)


def _parse(doc: str | None) -> Cycle | None:
    if doc is None:
        return None
    try:
        return Cycle.from_json(doc)
    except ValueError:
        return None
