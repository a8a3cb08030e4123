"""Prometheus exposition of the fleet's metrics, read from Redis at each scrape.

The counters are kept in Redis by the workers (``common.fleet.metrics``); this collector turns one
snapshot of them, plus a few live readings (queues, workers, the clock), into metric families.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from api.context import ApiContext
from common import keys
from common.errors import StoreUnavailable
from common.fleet import breaker, capacity, clock, goals, late, metrics, staleness, state, stats
from common.fleet.state import StateRecord
from common.ledger import Balance, queue_balance
from common.money import from_micros
from common.redis_conn import translated_errors

log = logging.getLogger(__name__)


class FleetCollector(Collector):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ce_redis_up", "1 when the state store answered this scrape.")
        try:
            with translated_errors("collect metrics"):
                families = list(self._collect())
        except StoreUnavailable as exc:
            log.warning("%s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        snap = metrics.snapshot(ctx.r)
        yield _tick_histogram(snap.tick_seconds)

        evaluations = CounterMetricFamily(
            "ce_evaluations", "Campaign evaluations by outcome (dropped: expired in the queue).", labels=["outcome"]
        )
        for outcome in metrics.OUTCOMES:
            evaluations.add_metric([outcome], snap.counter(f"evaluations_{outcome}"))
        yield evaluations
        reservations = CounterMetricFamily(
            "ce_reservations", "Ledger reservations asked by evaluations, by result.", labels=["result"]
        )
        for result in metrics.RESERVATIONS:
            reservations.add_metric([result], snap.counter(f"reservations_{result}"))
        yield reservations
        yield CounterMetricFamily("ce_bids", "Bids placed on platforms.", value=snap.counter("bids"))
        out = CounterMetricFamily(
            "ce_decisions_out",
            "Campaign outcomes handed to the NATS publisher, by result (overflow: buffer full; failed: past retries).",
            labels=["result"],
        )
        for result in metrics.PUBLISH_RESULTS:
            out.add_metric([result], snap.counter(f"decisions_out_{result}"))
        yield out
        yield from _ledger_alerts(snap)
        yield from _capacity(ctx, snap)
        yield from _goals(ctx)
        yield from _faults(ctx, snap)
        yield CounterMetricFamily(
            "ce_spend", "Spend of all bids, in currency units.", value=from_micros(int(snap.counter("spend_micros")))
        )
        yield CounterMetricFamily(
            "ce_value", "Conversion value of all bids, in currency units.", value=snap.counter("value")
        )

        error = SummaryMetricFamily(
            "ce_forecast_relative_error",
            "Relative error |forecast - actual| / actual of each tick's forecast.",
            labels=["platform", "metric"],
        )
        last_error = GaugeMetricFamily(
            "ce_forecast_last_relative_error",
            "Relative error of the newest forecast checked.",
            labels=["platform", "metric"],
        )
        for (pid, metric), (total, count, last) in snap.forecast_error.items():
            error.add_metric([pid, metric], count_value=count, sum_value=total)
            if math.isfinite(last):
                last_error.add_metric([pid, metric], last)
        yield error
        yield last_error

        depth = ctx.queue_depth()
        if depth is not None:
            queues = GaugeMetricFamily("ce_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
            for queue, length in depth.items():
                queues.add_metric([queue], length)
            yield queues
        yield GaugeMetricFamily("ce_workers_online", "Celery workers that answered a ping.", value=ctx.workers().online)
        tick = ctx.tick_info()
        yield GaugeMetricFamily("ce_tick_length_seconds", "Configured length of a tick.", value=tick.tick_seconds)
        if tick.last is not None:
            yield GaugeMetricFamily("ce_last_tick", "Number of the newest tick that ran.", value=tick.last)
        if tick.age_seconds is not None:
            yield GaugeMetricFamily(
                "ce_last_tick_age_seconds", "Seconds since the newest tick started.", value=tick.age_seconds
            )
        campaigns = GaugeMetricFamily("ce_campaigns", "Campaigns stored, and how many are active.", labels=["set"])
        pipe = ctx.r.pipeline(transaction=False)
        pipe.scard(keys.CAMPAIGNS)
        pipe.scard(keys.ACTIVE)
        total, active = pipe.execute()
        campaigns.add_metric(["all"], total)
        campaigns.add_metric(["active"], active)
        yield campaigns
        if ctx.settings.metrics_per_campaign:
            yield from _per_campaign(ctx)


def _ledger_alerts(snap: metrics.Snapshot) -> Iterator[Metric]:
    """Charges the ledger never granted (``common.fleet.metrics.count_settlements``): alert on any increase."""
    yield CounterMetricFamily(
        "ce_ledger_charges_beyond_grant",
        "Settles that cost more than their grants: a platform overshot a cap, or charged without a reservation.",
        value=snap.counter("ledger_charges_beyond_grant"),
    )
    yield CounterMetricFamily(
        "ce_ledger_unreserved_settles",
        "Costs reported for a tick without a usable reservation (a lost reserve or submit), recorded in full.",
        value=snap.counter("ledger_unreserved_settles"),
    )
    yield CounterMetricFamily(
        "ce_ledger_beyond_grant",
        "What those settles cost beyond their grants, in currency units.",
        value=from_micros(int(snap.counter("ledger_beyond_grant_micros"))),
    )
    yield CounterMetricFamily(
        "ce_ledger_overdraft",
        "What was charged beyond a campaign's whole budget (its overdraft), in currency units.",
        value=from_micros(int(snap.counter("ledger_overdraft_micros"))),
    )


def _capacity(ctx: ApiContext, snap: metrics.Snapshot) -> Iterator[Metric]:
    """Over capacity as ``common.fleet.capacity`` defines it, from the newest tick summary."""
    yield CounterMetricFamily(
        "ce_over_capacity_ticks",
        "Ticks summarised while the fleet was over capacity (short ticks running).",
        value=snap.counter("over_capacity_ticks"),
    )
    entry = stats.last(ctx.r)
    if entry is None:
        return
    yield GaugeMetricFamily(
        "ce_tick_evaluated_share",
        "Share of the newest summarised tick's due campaigns that were evaluated on time.",
        value=capacity.evaluated_share(entry),
    )
    over = int(capacity.over_capacity(entry))
    yield GaugeMetricFamily("ce_over_capacity", "1 while the fleet is over capacity (short ticks running).", value=over)


def _goals(ctx: ApiContext) -> Iterator[Metric]:
    """Campaigns with a goal by status, and their projected shortfall, as of the newest summarised tick.

    Labelled by status and metric only (a fixed handful of series); a campaign's own progress is in
    the API, and per campaign here only with CE_METRICS_PER_CAMPAIGN.
    """
    entry = stats.last(ctx.r)
    if entry is None:
        return
    counters: dict[str, str] = ctx.r.hgetall(keys.tick_counters(entry.tick))  # type: ignore[assignment]
    statuses, shortfall = goals.read(counters)
    by_status = GaugeMetricFamily(
        "ce_goals",
        "Campaigns with a goal evaluated at the newest summarised tick, by status (at_risk: the budget cannot "
        "buy the target).",
        labels=["status"],
    )
    for name, count in statuses.items():
        by_status.add_metric([name], count)
    yield by_status
    short = GaugeMetricFamily(
        "ce_goals_projected_shortfall",
        "Sum over campaigns at risk of their goal's target less the units projected by the end of the flight.",
        labels=["metric"],
    )
    for metric, amount in shortfall.items():
        short.add_metric([metric], amount)
    yield short


def _faults(ctx: ApiContext, snap: metrics.Snapshot) -> Iterator[Metric]:
    """Stale ticks, platform failures and breakers, clock offsets: what a fault drill measures recovery by."""
    yield CounterMetricFamily(
        "ce_ticks_stale",
        "Ticks skipped because their deadline had passed before their fan-out (after an outage).",
        value=snap.counter("ticks_stale"),
    )
    failures = CounterMetricFamily(
        "ce_platform_failures",
        "Platform submits of one evaluation that failed (not_placed: refused, unknown: error or time-out), and "
        "bids an open breaker kept from the platform (skipped).",
        labels=["platform", "kind"],
    )
    breakers = GaugeMetricFamily(
        "ce_platform_breaker_open", "1 while a platform's breaker is open or half-open.", labels=["platform"]
    )
    opened = CounterMetricFamily(
        "ce_platform_breaker_opened", "Times a platform's breaker opened.", labels=["platform"]
    )
    current = ctx.tick_info().current
    platform_ids = list(ctx.store.platforms())
    lag = GaugeMetricFamily(
        "ce_feed_lag_ticks",
        "Ticks between the tick under way and a platform's newest published figures (1 is as fresh as can be).",
        labels=["platform"],
    )
    stale = GaugeMetricFamily(
        "ce_feed_stale",
        "1 while a platform's feed is stale (CE_FEED_STALE_TICKS behind, or empty).",
        labels=["platform"],
    )
    for pid, feed in staleness.lags(ctx.feed, platform_ids, current, ctx.settings.feed_stale_ticks).items():
        if feed.lag is not None:
            lag.add_metric([pid], feed.lag)
        stale.add_metric([pid], int(feed.stale))
    yield lag
    yield stale
    yield GaugeMetricFamily(
        "ce_outcomes_pending",
        "Campaign-ticks whose bids wait for their outcomes (paper trading, a platform reporting later).",
        value=late.pending_count(ctx.r),
    )
    for pid, b in breaker.read(ctx.r, platform_ids).items():
        for kind in metrics.PLATFORM_FAILURES:
            failures.add_metric([pid, kind], snap.counter(f"platform:{pid}:{kind}"))
        breakers.add_metric([pid], int(b.state_at(current) != breaker.CLOSED))
        opened.add_metric([pid], b.opened)
    yield failures
    yield breakers
    yield opened
    offsets = GaugeMetricFamily(
        "ce_clock_offset_seconds", "Redis time minus a fleet process's clock, as it last measured.", labels=["process"]
    )
    seconds, micros = ctx.r.time()  # type: ignore[misc]
    for entry in clock.offsets(ctx.r, seconds + micros / 1e6):
        offsets.add_metric([entry.process], entry.offset)
    yield offsets


def _tick_histogram(hist: metrics.Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if math.isinf(bound) else repr(bound), float(count)) for bound, count in hist.buckets]
    return HistogramMetricFamily(
        "ce_tick_duration_seconds",
        "Seconds from a tick's start to the end of its slowest evaluation.",
        buckets=buckets,
        sum_value=hist.total,
    )


def _per_campaign(ctx: ApiContext) -> Iterator[Metric]:
    """One series per campaign and figure: only when CE_METRICS_PER_CAMPAIGN is set."""
    ids = ctx.store.ids()
    pipe = ctx.r.pipeline(transaction=False)
    for cid in ids:
        state.queue_read(pipe, cid)
        queue_balance(pipe, cid)
    replies = pipe.execute()
    families = {
        "spend": CounterMetricFamily("ce_campaign_spend", "Spend of one campaign.", labels=["campaign"]),
        "value": CounterMetricFamily("ce_campaign_value", "Conversion value of one campaign.", labels=["campaign"]),
        "conversions": CounterMetricFamily(
            "ce_campaign_conversions", "Conversions of one campaign.", labels=["campaign"]
        ),
    }
    remaining = GaugeMetricFamily("ce_campaign_budget_remaining", "Unspent, unreserved budget.", labels=["campaign"])
    projected = GaugeMetricFamily(
        "ce_campaign_goal_projected_share",
        "A campaign's goal: units projected by the end of its flight over the target, as of its last decision.",
        labels=["campaign"],
    )
    for i, cid in enumerate(ids):
        stored = StateRecord.from_hash(replies[2 * i])
        for name, family in families.items():
            family.add_metric([cid], getattr(stored, name))
        if stored.goal is not None and stored.goal.target > 0:
            projected.add_metric([cid], stored.goal.projected / stored.goal.target)
        balance = Balance.from_row(replies[2 * i + 1])
        remaining.add_metric([cid], from_micros(0 if balance is None else balance.remaining))
    yield from families.values()
    yield remaining
    yield projected


def registry(ctx: ApiContext) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(ctx))
    return reg
