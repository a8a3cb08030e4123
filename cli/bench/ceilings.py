"""The two ceilings the fleet is compared with, measured on the fleet's own Redis and broker.

- Celery's: ``ce.noop`` tasks sent in one batch by one producer, timed from the first send until
  every one has run. Each increments the ``ce:bench:noop`` counter as it runs; the time ends when
  the counter reaches the number sent (polled every few milliseconds).
- Redis's: one process doing, in pipelined batches of 500 campaigns, what an evaluation does in
  Redis and nothing else: the evaluation's own read (mark and read each campaign, its budget and
  state), the ledger's reserve+submit and settle scripts, and the evaluation's own writes (decision
  entries, state hash, tick counters, latency). The engine is replaced by a fixed bid on each of the
  campaign's platforms and the simulated platform by a fixed outcome (half the cap spent).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from celery import Celery

from cli.bench.measure import per_thousand, redis_cpu
from common import keys
from common.engine import Decision
from common.fleet.evaluation import GroupReport, Placed, _load, _record, _reserve_and_submit, _settle
from common.fleet.fleet import Fleet
from common.models import Bid, Campaign, Outcome
from common.redis_conn import Client

BATCH = 500
# Each bid's spend cap in the bare loop: small, so that budgets last however long it runs.
BARE_CAP = 0.01


@dataclass(frozen=True)
class Ceiling:
    """``done`` units (tasks, evaluations) in ``seconds`` of wall time."""

    done: int
    seconds: float
    redis_cpu_s_per_1k: float = 0.0
    client_cpu_s_per_1k: float = 0.0
    refused: int = 0

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


def noop_rate(
    app: Celery, client: Client, tasks: int, timeout: float = 300.0, *, broker: Client | None = None
) -> Ceiling:
    """Send ``tasks`` no-op tasks through one producer; time until all of them ran.

    The Redis CPU is the state store's and, when it is a separate server, the broker's.
    """
    servers = [client] if broker is None else [client, broker]
    client.delete(keys.BENCH_NOOP)
    cpu_before = sum(redis_cpu(server) for server in servers)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task("ce.noop", producer=producer)
    deadline = time.monotonic() + timeout
    while int(client.get(keys.BENCH_NOOP) or 0) < tasks:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tasks} no-op tasks did not all run within {timeout:.0f} s")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    cpu = sum(redis_cpu(server) for server in servers) - cpu_before
    return Ceiling(tasks, elapsed, redis_cpu_s_per_1k=per_thousand(cpu, tasks))


def bare_loop(fleet: Fleet, campaign_ids: list[str], first_tick: int, seconds: float) -> Ceiling:
    """Whole rounds over ``campaign_ids`` (one new tick each) until ``seconds`` have passed."""
    cpu_before, client_before = redis_cpu(fleet.r), time.process_time()
    started = time.perf_counter()
    done = refused = 0
    tick = first_tick
    while done == 0 or time.perf_counter() - started < seconds:
        for i in range(0, len(campaign_ids), BATCH):
            report = _one_batch(fleet, campaign_ids[i : i + BATCH], tick)
            done += report.evaluated
            refused += report.refused
        tick += 1
    elapsed = time.perf_counter() - started
    return Ceiling(
        done,
        elapsed,
        redis_cpu_s_per_1k=per_thousand(redis_cpu(fleet.r) - cpu_before, done),
        client_cpu_s_per_1k=per_thousand(time.process_time() - client_before, done),
        refused=refused,
    )


def _one_batch(fleet: Fleet, ids: list[str], tick: int) -> GroupReport:
    """An evaluation's Redis round trips for ``ids``, through the evaluation's own functions."""
    started = time.time()
    report = GroupReport(tick)
    wanted: list[tuple[Campaign, Decision]] = []
    token = uuid.uuid4().hex
    views, _breakers = _load(fleet, ids, tick, token, [])
    for view in views:
        if view.campaign is None:
            continue
        bids = tuple(Bid(view.id, pid, BARE_CAP, BARE_CAP) for pid in view.campaign.spec.platforms)
        decision = Decision(bids, view.state.pacing, planned=BARE_CAP * len(bids))
        report.evaluated += 1
        report.decisions[view.id] = decision
        report.stakes[view.id] = (view.balance.remaining, view.campaign.spec.end_tick)
        wanted.append((view.campaign, decision))
    orders, granted = _reserve_and_submit(fleet, report, wanted, tick)
    report.placed = [Placed(o.bid, Outcome(o.bid.spend_cap / 2, 1.0, 0.1, 0.0), 1.0) for o in orders]
    _settle(fleet, report, granted, tick)
    _record(fleet, report, started, time.time, token)
    return report
