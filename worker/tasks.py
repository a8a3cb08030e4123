"""Celery tasks: thin shells that call the domain in ``common``."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from celery.signals import task_revoked

from common import keys
from common.errors import StoreUnavailable
from common.fleet import late, maintenance, outage
from common.fleet import tick as ticks
from common.fleet.evaluation import evaluate as evaluate_group
from common.redis_conn import store_call
from worker import stale
from worker.app import EVALUATION_QUEUE
from worker.context import broker, fleet
from worker.fanout import publish_evaluations

log = logging.getLogger(__name__)


@shared_task(name="ce.tick", ignore_result=True, acks_late=False)
def tick(number: int | None = None, live: bool = True, scheduled_at: float | None = None) -> int | None:
    """Run a tick: publish the feed, forecast, fan out one evaluation task per group of campaigns.

    Beat sends the tick boundary it fired for (``scheduled_at``): the tick starting then, whose
    evaluations expire at its deadline. A backtest names the tick and runs it with ``live=False``:
    no deadline. The task's own time, from its start through the fan-out, goes into the tick's
    counters (``tick_task_ms`` of its summary).
    """
    f = fleet()
    started = f.clock.now()
    if number is None:
        number = f.clock.tick_at(started if scheduled_at is None else scheduled_at)
    # A live tick past its deadline (its message waited out an outage) is skipped: see ticks.begin.
    # One that finds the store unavailable tries again until its deadline: see common/fleet/outage.py.
    # A backtest's tick (not live) always plays the simulated market; a live one follows CE_FEED.
    deadline = f.clock.deadline_of(number) if live else None
    if deadline is not None:
        plan = outage.begin_live(f, number, deadline=deadline, now=f.clock.now, before=lambda: _trim_stale(number))
    else:
        plan = ticks.begin(f, number, simulate_feed=True)
    if plan is None:
        return None
    expires = datetime.fromtimestamp(deadline, tz=UTC) if deadline is not None else None
    publish_evaluations(evaluate, plan.groups, number, deadline, expires)
    took_ms = (f.clock.now() - started) * 1000
    ticks.record_task_time(f, number, took_ms)
    if f.collects:
        _collect_late(number)
    log.info(
        "tick %d: %d campaigns in %d tasks, fan-out took %.1f ms",
        number, plan.campaigns, len(plan.groups), took_ms,
        extra={"tick": number},
    )  # fmt: skip
    return number


def _collect_late(number: int) -> None:
    """Ask the platforms for the outcomes of past ticks still pending, and settle them (``common/fleet/late.py``).

    After the fan-out, so that a platform slow to answer never delays the tick's evaluations; a
    failure leaves them for the next tick.
    """
    try:
        done = late.collect(fleet(), number)
    except Exception:  # the tick is fanned out and counted: collecting is never its failure
        log.exception("tick %d: collecting late outcomes failed; the next tick tries again", number)
        return
    if done.settled or done.dropped:
        log.info("tick %d: late outcomes settled for %d (campaign, tick), %d still waiting, %d given up",
                 number, done.settled, done.waiting, done.dropped, extra={"tick": number})  # fmt: skip


@store_call("trim stale evaluations")
def _trim_stale(number: int) -> None:
    """Take the queued evaluations of past ticks off the queue before this tick's (``worker/stale.py``).

    Before ``begin``, so that the summary of the tick before counts them among its drops. Failures of
    the broker's Redis or the store are ``StoreUnavailable``: the tick tries again until its deadline.
    """
    f = fleet()
    deadlines = [f.clock.deadline_of(t) for t in range(max(0, number - stale.TRIM_TICKS), number)]
    dropped = stale.trim(broker(), EVALUATION_QUEUE, deadlines)
    if dropped:
        pipe = f.once.pipeline(transaction=False)  # increments: never retried
        for t, campaigns in dropped.items():
            pipe.hincrby(keys.tick_counters(t), "dropped", campaigns)
        pipe.execute()
        log.info("tick %d: trimmed queued evaluations of %d campaigns of past ticks", number, sum(dropped.values()),
                 extra={"tick": number})  # fmt: skip


# Its expiry is judged by the fleet's time (worker/request.py), not the worker machine's clock.
@shared_task(name="ce.evaluate", ignore_result=True, bind=True, Request="worker.request:FleetRequest")
def evaluate(self: Any, campaign_ids: list[str], tick_number: int, deadline: float | None) -> None:
    """Evaluate a group for a tick; deadlines are in the fleet's time (``common/fleet/clock.py``).

    The delivery's token is the task id and a part of its own: a client retry within this run is
    recognised as its own, while a redelivery of the message (after a worker died mid-task) is a
    new delivery, which finds the campaigns it marked taken and does nothing with them.

    It returns nothing: what it did is in the tick's counters, and a return value would only be
    copied to the worker's main process and formatted for its log, for every task.
    """
    f = fleet()
    started = f.clock.start_of(tick_number) if deadline is not None else None
    token = f"{self.request.id}:{uuid.uuid4().hex[:8]}"
    evaluate_group(f, campaign_ids, tick_number, deadline=deadline, started=started, now=f.clock.now, token=token)


@shared_task(name="ce.sweep", ignore_result=True)
def sweep() -> int:
    """Close reservations past their deadline and grace (crashed evaluations), then compact old ledger
    history (``common.fleet.maintenance``); returns how many reservations it closed.

    Those never submitted are released; submitted ones, whose bids may have been charged, are
    charged at their full grant.
    """
    # By the fleet's time (Redis time, common/fleet/clock.py); sweep_all logs what it closed.
    return maintenance.run_now(fleet()).swept


@shared_task(name="ce.noop", ignore_result=True)
def bench_noop() -> None:
    """Benchmark task, not part of the fleet: does nothing but count itself in ``ce:bench:noop``.

    ``campaign-engine bench`` sends it N times through one producer and waits until the counter
    reaches N: the end-to-end rate is Celery's ceiling on this broker and worker pool, the fastest
    any task that does one Redis write can run.
    """
    fleet().r.incr(keys.BENCH_NOOP)


@task_revoked.connect
def _count_dropped(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    """An evaluation that expired in the queue missed its tick: count it as dropped."""
    if not expired or getattr(sender, "name", None) != "ce.evaluate" or request is None:
        return
    try:
        campaign_ids, tick_number = request.args[0], int(request.args[1])
    except (AttributeError, IndexError, TypeError, ValueError):
        return
    # Called by Celery as it discards the message: an error here would only be logged by Celery
    # as a failing signal receiver, so an outage of the store is logged once, here, and the count lost.
    try:
        ticks.count_dropped(fleet(), tick_number, len(campaign_ids))
    except StoreUnavailable as exc:
        log.warning("tick %d: %d expired evaluations not counted as dropped: %s", tick_number,
                    len(campaign_ids), exc, extra={"tick": tick_number})  # fmt: skip
