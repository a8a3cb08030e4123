"""Health, Prometheus metrics, and the JSON the dashboard draws (``/api/...``)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from api.auth import Context, Read
from api.context import ApiContext, TickInfo
from api.schemas import (
    ANY_ROUTE,
    TOKEN,
    DecisionsOutView,
    FeedHealth,
    HealthView,
    Overview,
    OverviewCampaign,
    PlatformHealth,
    PlatformSeries,
    PlatformsView,
    SystemView,
    TickStat,
    TicksView,
    Totals,
    errors,
)
from api.views import campaign_views
from common import keys
from common.errors import StoreUnavailable
from common.fleet import breaker, capacity, clock, eviction, metrics, staleness, stats
from common.fleet.metrics import FORECAST_METRICS
from common.forecast.cache import TickForecasts

router = APIRouter(tags=["system"])
dashboard = APIRouter(prefix="/api", tags=["dashboard"], dependencies=[Read], responses={**ANY_ROUTE, **TOKEN})

# The classic text format, which every Prometheus version reads (generate_latest writes it).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The overview lists campaigns in id order up to this many; the rest are counted in the totals.
OVERVIEW_CAMPAIGNS = 2000
# A process whose clock is further than this from Redis time is reported (it runs on Redis time anyway).
MAX_CLOCK_OFFSET = 1.0
# Outcomes lost on their way to NATS this recently leave the fleet degraded.
RECENT_LOSS_SECONDS = 60.0


@router.get("/health/live", responses=errors(413, 500))
def live() -> dict[str, str]:
    """The API process answers (for container health checks); says nothing about the fleet."""
    return {"status": "ok"}


@router.get(
    "/health",
    dependencies=[Read],
    response_model=HealthView,
    responses={**ANY_ROUTE, **TOKEN, 503: {"model": HealthView, "description": "Unavailable, with the reasons."}},
)
def health(ctx: Context) -> JSONResponse:
    """200 when Redis answers, at least one worker answers a ping and the last tick is recent; else 503
    with the reasons, each saying since when.

    ``degraded`` (still 200) while the fleet runs but not fully: over capacity (``common.fleet.capacity``:
    it evaluates what it can, the most money at stake first), a platform skipped by its open breaker, a
    process whose clock is far from Redis time, outcomes published to NATS lost in the last minute
    (``decisions_out``).
    """
    return JSONResponse(*health_view(ctx))


def health_view(ctx: ApiContext) -> tuple[dict[str, Any], int]:
    """The health answer and its status code; the dashboard shows the same reasons."""
    now = time.time()
    reasons: list[str] = []
    try:
        seconds, micros = ctx.probe.time()  # type: ignore[misc]
        redis_now: float | None = seconds + micros / 1e6
    except Exception as exc:  # any failure to reach Redis is the answer itself
        redis_now = None
        failure = type(exc).__name__
    redis_ok = redis_now is not None
    redis_since = ctx.failing_since("redis", not redis_ok, now)
    if redis_since is not None:
        reasons.append(f"redis unreachable since {_at(redis_since)} ({now - redis_since:.0f} s): {failure}")
    if redis_ok:
        reasons += [f"redis may evict keys: {line}" for line in eviction.problems(ctx.r)]
    workers = ctx.workers() if redis_ok else None
    tick = ctx.tick_info() if redis_ok else None
    depth, broker_failure = None, None
    if redis_ok:
        try:
            depth = ctx.queue_depth()
        except StoreUnavailable as exc:
            broker_failure = str(exc.__cause__ or exc)
    broker_since = ctx.failing_since("broker", broker_failure is not None, now)
    if broker_since is not None:
        reasons.append(f"broker unreachable since {_at(broker_since)} ({now - broker_since:.0f} s): {broker_failure}")
    newest = stats.last(ctx.r) if redis_ok else None
    workers_since = ctx.failing_since("workers", workers is not None and workers.online == 0, now)
    if workers is not None and workers_since is not None:
        reasons.append(
            f"no worker heartbeat since {_at(workers_since)} ({now - workers_since:.0f} s): no worker answered a ping"
            + (f" ({workers.error})" if workers.error else "")
        )
    if tick is not None:
        if tick.age_seconds is None:
            reasons.append("no tick has run yet")
        elif tick.age_seconds > tick.stale_after:
            started = tick.now - tick.age_seconds
            reasons.append(f"no tick since {_at(started)} ({tick.age_seconds:.0f} s; beat or workers stopped?)")
    down = bool(reasons)
    over = newest is not None and capacity.over_capacity(newest)
    if newest is not None and over:
        reasons.append(
            f"over capacity: {newest.short_run} ticks running short, tick {newest.tick} evaluated "
            f"{capacity.evaluated_share(newest):.0%} of its due campaigns"
        )
    platforms: dict[str, PlatformHealth] = {}
    feeds: dict[str, FeedHealth] = {}
    stale_feeds: list[str] = []
    offsets: dict[str, float] = {}
    stale_ticks = 0
    if redis_ok and redis_now is not None:
        current = tick.current if tick is not None else 0
        for pid, b in breaker.read(ctx.r, list(ctx.store.platforms())).items():
            shown = PlatformHealth(
                breaker=b.state_at(current),
                failures=b.failures,
                open_until=b.open_until,
                opened=b.opened,
                error=b.error,
            )
            platforms[pid] = shown
            if shown.breaker != breaker.CLOSED:
                what = "skipped until tick" if shown.breaker == breaker.OPEN else "tried again (half-open) since tick"
                reasons.append(f"platform {pid} {what} {b.open_until} after {b.failures} failing ticks: {b.error}")
                over = True
        for entry in clock.offsets(ctx.r, redis_now):
            offsets[entry.process] = round(entry.offset, 4)
            if abs(entry.offset) > MAX_CLOCK_OFFSET:
                reasons.append(
                    f"clock of {entry.process} is {abs(entry.offset):.1f} s "
                    f"{'behind' if entry.offset > 0 else 'ahead of'} Redis time (the fleet keeps Redis time)"
                )
                over = True
        stale_ticks = int(metrics.snapshot(ctx.r).counter("ticks_stale"))
        if tick is not None and tick.last is not None:
            feeds = feed_health(ctx, tick)
            stale_feeds = [pid for pid, f in feeds.items() if f.stale]
            for pid in stale_feeds:
                reasons.append(feeds[pid].reason)
    out = decisions_out(ctx) if redis_ok else None
    loss_age = out.last_loss_age_seconds if out is not None else None
    losing = loss_age is not None and loss_age < RECENT_LOSS_SECONDS
    if out is not None and losing:
        reasons.append(f"outcomes lost on the way to NATS: {out.lost} in all, the last {loss_age:.0f} s ago")
    view = HealthView(
        status="unavailable" if down else "degraded" if over or losing or stale_feeds else "ok",
        reasons=reasons,
        redis=redis_ok,
        redis_unreachable_since=redis_since,
        workers_online=workers.online if workers else 0,
        workers=workers.names if workers else [],
        no_worker_since=workers_since,
        last_tick=tick.last if tick else None,
        last_tick_age_seconds=tick.age_seconds if tick else None,
        queue_depth=depth,
        over_capacity=newest is not None and capacity.over_capacity(newest),
        evaluated_share=None if newest is None else capacity.evaluated_share(newest),
        short_ticks=0 if newest is None else newest.short_run,
        stale_ticks=stale_ticks,
        platforms=platforms,
        feeds=feeds,
        clock_offsets=offsets,
        decisions_out=out,
    )
    return view.model_dump(), 503 if down else 200


def feed_health(ctx: ApiContext, tick: TickInfo) -> dict[str, FeedHealth]:
    """Each registered platform's feed against the tick under way (common/fleet/staleness.py)."""
    out = {}
    lags = staleness.lags(ctx.feed, list(ctx.store.platforms()), tick.current, ctx.settings.feed_stale_ticks)
    for pid, lag in lags.items():
        since = lag.stale_since
        at = None if since is None or tick.epoch is None else tick.epoch + since * tick.tick_seconds
        reason = lag.describe() + (f" ({_at(at)})" if at is not None else "")
        out[pid] = FeedHealth(
            newest_tick=lag.newest, lag_ticks=lag.lag, stale=lag.stale, stale_since_tick=since, stale_since=at,
            reason=reason if lag.stale else "",
        )  # fmt: skip
    return out


def _at(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%H:%M:%S UTC")


def decisions_out(ctx: ApiContext) -> DecisionsOutView | None:
    """What became of the outcomes handed to the NATS publisher; None when none is configured."""
    if ctx.settings.decisions_nats_url is None:
        return None
    snap = metrics.snapshot(ctx.r)
    lost_at = snap.counters.get("decisions_out_lost_at")
    return DecisionsOutView(
        published=int(snap.counter("decisions_out_published")),
        lost=int(snap.counter("decisions_out_overflow") + snap.counter("decisions_out_failed")),
        last_loss_age_seconds=None if lost_at is None else max(0.0, time.time() - lost_at),
    )


@router.get(
    "/metrics",
    dependencies=[Read],
    response_class=Response,
    responses={
        **ANY_ROUTE,
        **TOKEN,
        200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text exposition."},
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Fleet metrics for Prometheus, aggregated across every worker process in Redis."""
    return Response(generate_latest(request.app.state.registry), media_type=METRICS_CONTENT_TYPE)


def system_view(ctx: ApiContext) -> SystemView:
    workers = ctx.workers()
    tick = ctx.tick_info()
    return SystemView(
        workers_online=workers.online,
        workers=workers.names,
        queue_depth=ctx.queue_depth(),
        last_tick=tick.last,
        last_tick_age_seconds=tick.age_seconds,
        tick_seconds=tick.tick_seconds,
        current_tick=tick.current,
    )


@dashboard.get("/overview", response_model=Overview)
def overview(request: Request, ctx: Context) -> Overview:
    """Campaigns with balance, outcomes, pacing and ROI trend, fleet totals and the system's state.

    ``now`` is taken before anything is read: every figure is at least as recent as it.
    """
    now = time.time()
    system = system_view(ctx)
    tick = ctx.tick_info()
    ids = ctx.store.ids()
    campaigns = list(ctx.store.get_many(ids[:OVERVIEW_CAMPAIGNS]).values())
    views = campaign_views(ctx.r, campaigns, tick)
    trends = request.app.state.trends
    trends.refresh(ctx.r)
    window = trends.window(tick.last)
    rows = [
        OverviewCampaign(**v.model_dump(), roi_trend=trends.roi(v.id, v.spec.value_per_conversion, window))
        for v in views
    ]
    totals = Totals(
        campaigns=len(ids),
        active=sum(1 for v in views if v.status == "active"),
        budget=sum(v.balance.budget for v in views),
        spent=sum(v.balance.spent for v in views),
        plan=sum(v.pacing.plan or 0.0 for v in views),
        value=sum(v.outcomes.value for v in views),
        conversions=sum(v.outcomes.conversions for v in views),
    )
    return Overview(now=now, system=system, totals=totals, campaigns=rows, trend_ticks=window)


@dashboard.get("/platforms", response_model=PlatformsView)
def platforms(ctx: Context, ticks: Annotated[int, Query(ge=2, le=500)] = 60) -> PlatformsView:
    """Forecast against actual CPC, CVR and volume of each platform over the last ticks.

    The forecast of tick t is the one cached when t ran (made from the feed of ticks before t);
    the actual is what the feed published after t ended, so the newest tick has no actual yet.
    """
    tick = ctx.tick_info()
    pids = list(ctx.store.platforms())
    if tick.last is None:
        return PlatformsView(ticks=[], platforms={})
    window = list(range(max(0, tick.last - ticks + 1), tick.last + 1))
    pipe = ctx.r.pipeline(transaction=False)
    for t in window:
        pipe.get(keys.forecast(t))
    for pid in pids:
        pipe.hmget(keys.feed(pid), [str(t) for t in window])
    replies = pipe.execute()
    forecasts = [_forecast(doc) for doc in replies[: len(window)]]
    series = {}
    for pid, actual_docs in zip(pids, replies[len(window) :], strict=True):
        actual = [_json(doc) for doc in actual_docs]
        series[pid] = PlatformSeries(
            forecast={m: [_num(f.get(pid, {}).get(m)) for f in forecasts] for m in FORECAST_METRICS},
            actual={m: [_num(a.get(m)) for a in actual] for m in FORECAST_METRICS},
        )
    return PlatformsView(ticks=window, platforms=series)


@dashboard.get("/ticks", response_model=TicksView)
def ticks(ctx: Context, count: Annotated[int, Query(ge=1, le=1000)] = 60) -> TicksView:
    """Summaries of the last finished ticks (the ``ce:tick:stats`` stream)."""
    entries: list[tuple[str, dict[str, str]]] = ctx.r.xrevrange(keys.TICK_STATS, count=count)  # type: ignore[assignment]
    out = []
    for e in stats.parse(reversed(entries)):
        out.append(
            TickStat(
                tick=e.tick,
                fanned=e.fanned,
                evaluated=e.evaluated,
                bids=e.bids,
                spend=e.spend,
                value=e.value,
                late=e.late,
                dropped=e.dropped,
                missed=e.missed,
                worst_latency_ms=e.worst_latency_ms,
                evaluated_share=capacity.evaluated_share(e),
                over_capacity=capacity.over_capacity(e),
            )
        )
    return TicksView(ticks=out)


def _json(doc: str | None) -> dict[str, Any]:
    if not doc:
        return {}
    try:
        value = json.loads(doc)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _forecast(doc: str | None) -> dict[str, dict[str, float]]:
    """A tick's point forecasts; none when the tick has no readable forecast document."""
    if not doc:
        return {}
    try:
        return TickForecasts.from_json(doc).figures()
    except ValueError:
        return {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
