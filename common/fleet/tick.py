"""One tick of the fleet: claim its number, publish the feed, forecast, and plan the fan-out.

Called by the Celery tick task live and by the backtest runner; it knows nothing of Celery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from common import keys
from common.fleet import capacity, cycles, metrics, stake, staleness, stats
from common.fleet.clock import process_name
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.forecast import cache as forecast_cache
from common.forecast.base import HISTORY_TICKS
from common.forecast.cache import TickForecasts
from common.forecast.forecasts import Forecasts, forecast
from common.models import CampaignStatus
from common.redis_conn import Fields, store_call
from common.redis_conn import claim as claim_key

log = logging.getLogger(__name__)

# Per-tick keys (claims, counters) outlive the tick by a day, long enough for any post-mortem, unless
# TICK_KEYS_KEPT ticks pass first: each tick deletes those of the tick that many before it, so a
# backtest, which runs a day of ticks in minutes, keeps as many as the live fleet. The tick summaries
# in ce:tick:stats stay.
TICK_KEY_TTL = 86_400
TICK_KEYS_KEPT = 600
# Ticks of JSON feed kept in Redis: the forecasting window, and the dashboard's forecast-against-actual
# view. The volume cycle reads its season from the feed's compact volume history instead.
FEED_RETENTION = HISTORY_TICKS  # the base of the path (common.forecast.base), the window and the dashboard
COUNTERS = ("fanned", "evaluated", "bids", "spend_micros", "late", "dropped", "duplicates", "skipped")


@dataclass(frozen=True)
class TickPlan:
    tick: int
    groups: list[list[str]]
    forecasts: TickForecasts = field(repr=False)

    @property
    def campaigns(self) -> int:
        return sum(len(g) for g in self.groups)


def claim_token() -> str:
    """A value naming one claim by this process: host, pid and a random part."""
    return f"{process_name()}:{uuid.uuid4().hex[:12]}"


@store_call("claim the tick")
def claim(fleet: Fleet, tick: int, token: str | None = None) -> bool:
    """True for the one caller that runs ``tick``; two beats racing get one winner.

    The claim holds the claimer's token, so a client retry of the same claim (its reply lost) is
    recognised as its own instead of losing the tick.
    """
    return claim_key(fleet.r, keys.tick_claim(tick), token or claim_token(), TICK_KEY_TTL)


def stale(tick: int, deadline: float | None, now: Callable[[], float] | None) -> bool:
    """Past its deadline: a tick whose evaluations would all be dropped as late."""
    return deadline is not None and now is not None and now() > deadline


@store_call("count a stale tick")
def count_stale(fleet: Fleet, tick: int, at: str) -> None:
    """A tick skipped because its deadline had passed, ``at`` the start or before its fan-out."""
    log.warning("tick %d skipped: its deadline passed %s", tick, at, extra={"tick": tick})
    metrics.count_stale_tick(fleet.once, tick)


def compute_forecasts(fleet: Fleet, tick: int) -> TickForecasts:
    """Forecasts for ``tick`` from the feed of the ticks before it, with each platform's price spread."""
    platforms = fleet.store.platforms()
    pids = list(platforms)
    if not pids:
        return TickForecasts(Forecasts(tick, {}), {})
    window = fleet.settings.forecast_window
    history = fleet.feed.window(pids, tick - 1, window)
    fitted = cycles.fits(fleet.r, fleet.feed, pids, tick, fleet.season, fleet.cycle_refit_ticks, fleet.cycle_hints)
    forecasts = forecast(
        history,
        pids,
        tick,
        window=window,
        cycles={pid: fit.cycle for pid, fit in fitted.items()},
        bases={pid: fit.base for pid, fit in fitted.items()},
    )
    feeds = staleness.lags(fleet.feed, pids, tick, fleet.settings.feed_stale_ticks)
    stale = {pid: lag.newest for pid, lag in feeds.items() if lag.stale}
    if stale:
        log.warning("tick %d: stale feeds, forecast from what they have: %s", tick, stale, extra={"tick": tick})
    return TickForecasts(forecasts, {pid: info.price_sigma for pid, info in platforms.items()}, stale)


def forecasts_for(fleet: Fleet, tick: int) -> TickForecasts:
    return forecast_cache.get_or_compute(fleet.r, tick, lambda: compute_forecasts(fleet, tick))


@store_call("begin the tick")
def begin(
    fleet: Fleet,
    tick: int,
    *,
    simulate_feed: bool | None = None,
    deadline: float | None = None,
    now: Callable[[], float] | None = None,
    token: str | None = None,
) -> TickPlan | None:
    """Run tick ``tick`` unless another process did: returns the fan-out plan, or None.

    A live tick has a ``deadline`` (fleet time, read with ``now``): a tick already past it when it
    begins (its message waited in the queue through an outage) is skipped without being claimed, and
    one that passes it while begun (a slow Redis) is summarized but fans nothing out. Either way it
    is counted as stale, and the live tick after it runs at once instead of behind a backlog.
    ``token`` names the claim: a caller that tries again after a failure passes the same one.

    ``simulate_feed`` (default: ``CE_FEED=simulated``) publishes the simulated market's figures of the
    tick before; with an external feed only what was posted is used.
    """
    if stale(tick, deadline, now):
        count_stale(fleet, tick, "before it began")
        return None
    if not claim(fleet, tick, token):
        log.info("tick %d already claimed", tick, extra={"tick": tick})
        return None
    if simulate_feed is None:
        simulate_feed = fleet.settings.feed == "simulated"
    if simulate_feed and tick > 0:
        publish_simulated_feed(fleet, tick)
    elif tick > 0:
        trim_feed(fleet, tick, list(fleet.store.platforms()))
    forecasts = forecasts_for(fleet, tick)
    due = due_campaigns(fleet, tick)
    # Most spend at stake first: what a short tick leaves out is the tail (see fleet/stake.py).
    due = stake.by_stake(fleet, due, tick)
    size = fleet.settings.campaigns_per_task
    groups = [due[i : i + size] for i in range(0, len(due), size)]
    if stale(tick, deadline, now):
        if tick > 0:
            summarize(fleet, tick - 1)
        count_stale(fleet, tick, "before its fan-out")
        return None
    open_counters(fleet, tick, len(due))
    if tick > 0:
        summarize(fleet, tick - 1)
    return TickPlan(tick, groups, forecasts)


def publish_simulated_feed(fleet: Fleet, tick: int) -> None:
    """Publish the simulated market's figures of ``tick - 1`` and trim what the feed no longer needs."""
    fleet.feed.publish(tick - 1, fleet.simulated_feed.figures(tick - 1))
    trim_feed(fleet, tick, list(fleet.scenario.platforms))


def trim_feed(fleet: Fleet, tick: int, platform_ids: list[str]) -> None:
    """Forget the figures the forecasts and the dashboard no longer read (a few ticks each tick)."""
    kept = max(FEED_RETENTION, fleet.settings.forecast_window)
    fleet.feed.trim(platform_ids, tick - kept - 2, 8)


def open_counters(fleet: Fleet, tick: int, fanned: int) -> None:
    """Start the tick's counters at zero (``fanned`` at its fan-out) and mark it the newest tick."""
    pipe = fleet.r.pipeline(transaction=False)
    counters: Fields = {name: 0 for name in COUNTERS} | {"fanned": fanned}
    pipe.hset(keys.tick_counters(tick), mapping=counters)
    pipe.expire(keys.tick_counters(tick), TICK_KEY_TTL)
    pipe.set(keys.LAST_TICK, tick)
    # The decision stream holds a number of ticks, not of entries: sized by the campaigns due now.
    kept = min(fleet.settings.decisions_maxlen, max(1, fanned) * fleet.settings.decisions_retention_ticks)
    pipe.xtrim(keys.DECISIONS, maxlen=kept, approximate=True)
    forget(pipe, tick - TICK_KEYS_KEPT)
    pipe.execute()


def forget(pipe: Any, tick: int) -> None:
    """Queue the deletion of one past tick's own keys (claim, counters, latency, forecast, metrics guard)."""
    if tick < 0:
        return
    for key in (
        keys.tick_claim(tick), keys.tick_counters(tick), keys.tick_latency(tick), keys.forecast(tick),
        keys.metrics_recorded(tick),
    ):  # fmt: skip
        pipe.delete(key)


@store_call("count dropped evaluations")
def count_dropped(fleet: Fleet, tick: int, campaigns: int) -> None:
    """Count ``campaigns`` whose evaluation expired in the queue among the tick's drops."""
    # Not retried: a retry after a lost reply would count them twice.
    fleet.once.hincrby(keys.tick_counters(tick), "dropped", campaigns)


def record_task_time(fleet: Fleet, tick: int, milliseconds: float) -> None:
    """Add the tick task's own duration to the tick's counters; ``summarize`` carries it into the entry."""
    # Not retried: a retry after a lost reply would add the time twice.
    fleet.once.hincrbyfloat(keys.tick_counters(tick), "tick_task_ms", milliseconds)


def due_campaigns(fleet: Fleet, tick: int) -> list[str]:
    """Active campaigns inside their flight, by id; those whose flight is over become finished.

    Found by the store's flight index, without reading a spec: only the few that ended are read.
    """
    due, ended = fleet.store.flights(tick)
    found = fleet.store.get_many(ended)
    for cid in ended:
        # An entry left by an interrupted pause or delete is taken out: finish() would turn a paused
        # campaign into a finished one.
        if cid in found and found[cid].status is CampaignStatus.ACTIVE:
            fleet.store.finish(cid)
        else:
            fleet.store.reindex(cid)
    return due


@store_call("summarize the tick")
def summarize(fleet: Fleet, tick: int) -> TickStats | None:
    """Close a tick's books: one entry in ``ce:tick:stats`` with what its evaluations did."""
    counters: dict[str, str] = fleet.r.hgetall(keys.tick_counters(tick))  # type: ignore[assignment]
    if not counters:
        return None
    recent = stats.recent(fleet.r, 4)
    if any(e.tick == tick for e in recent):
        return None  # summarised already: by an attempt of the next tick's begin that then failed
    newest = recent[0] if recent else None
    worst = fleet.r.zscore(keys.tick_latency(tick), "worst")
    counts = {name: int(counters.get(name, 0)) for name in COUNTERS}
    entry = TickStats(
        tick=tick,
        **counts,
        value=float(counters.get("value", 0)),
        planned=float(counters.get("planned", 0)),
        # Whatever was fanned out but neither evaluated nor skipped on time missed its tick.
        missed=max(0, counts["fanned"] - counts["evaluated"] - counts["skipped"]),
        # As the stream holds it, so that the metrics see what every reader of the entry sees.
        worst_latency_ms=float(f"{worst or 0:.1f}"),
        tick_task_ms=float(f"{float(counters.get('tick_task_ms', 0)):.1f}"),
    )
    entry = replace(entry, short_run=capacity.short_run(entry, newest))
    # Not retried: a retry after a lost reply would append the entry or add its counts twice.
    stats.append(fleet.once, entry, fleet.settings.tick_stats_retention_ticks)
    metrics.record_tick(fleet.once, entry)
    return entry
