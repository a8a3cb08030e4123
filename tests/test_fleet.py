"""The fleet with real parts: a Celery worker and beat over the test Redis."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from cli.up import demo_group_size
from common import keys
from common.fleet import decisions
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.tick import begin, claim, due_campaigns
from common.market.scenario import Scenario
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks

CAMPAIGNS_ONE_PER_TASK = 200


def test_a_tick_number_is_claimed_once(fleet: Fleet) -> None:
    assert claim(fleet, 7) is True
    assert claim(fleet, 7) is False
    assert claim(fleet, 8) is True


def test_begin_publishes_the_previous_tick_and_plans_groups(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 7)
    fleet.settings = fleet.settings.model_copy(update={"campaigns_per_task": 3})
    plan = begin(fleet, 5)
    assert plan is not None
    assert [len(g) for g in plan.groups] == [3, 3, 1]
    assert sorted(c for g in plan.groups for c in g) == sorted(ids)
    window = fleet.feed.window(list(fleet.scenario.platforms), 4, 1)
    series = Scenario.load(market).platforms["search"]
    assert window[0, 0, 0] == pytest.approx(series.cpc[4])
    assert begin(fleet, 5) is None, "a second run of the same tick does nothing"


def test_late_evaluation_is_dropped_and_counted(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 3)
    assert begin(fleet, 1) is not None
    report = evaluate(fleet, ids, 1, deadline=time.time() - 0.5)
    assert report.late == 3 and report.placed == [] and report.evaluated == 0
    assert fleet.r.hget(keys.tick_counters(1), "late") == "3"
    assert fleet.r.xlen(keys.DECISIONS) == 0
    for cid in ids:
        balance = fleet.ledger.balance(cid)
        assert balance.reserved == 0 and balance.spent == 0


def test_duplicate_delivery_bids_once(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 5)
    for t in range(1, 4):
        assert begin(fleet, t) is not None
    first = evaluate(fleet, ids, 3)
    spent = sum(fleet.ledger.balance(cid).spent for cid in ids)
    second = evaluate(fleet, ids, 3)
    assert first.placed, "the first delivery bids"
    assert second.placed == [] and second.duplicates == 5
    assert sum(fleet.ledger.balance(cid).spent for cid in ids) == spent, "the second delivery charges nothing"
    entries = decisions.parse(fleet.r.xrange(keys.DECISIONS))  # type: ignore[arg-type]
    bids = [d for _id, d in decisions.bids(entries)]
    assert len(bids) == len(first.placed)
    assert len(entries) == len({p.bid.campaign for p in first.placed}), "one entry per campaign that bid"
    # The ledger charged what the decision stream says the bids cost, each rounded up to the micro-unit.
    cost = sum(d.cost for d in bids) * 1e6
    assert cost > 0 and cost - 1 < spent < cost + len(bids)


@pytest.mark.slow
def test_live_fleet_evaluates_every_campaign_every_tick(redis_url: str, market: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = load_campaigns(client, market, 200)
    # Grouped as `up` groups them for this machine: one task per campaign is more than it allows.
    group_size = demo_group_size(Settings(redis_url=redis_url), len(ids))
    env = fleet_env(redis_url, tmp_path, market, CE_CAMPAIGNS_PER_TASK=str(group_size))
    with running(env, tmp_path / "logs") as group:
        wait_for_ticks(client, 1, group, timeout=30)
        start = client.xlen(keys.TICK_STATS)
        entries = [TickStats.from_fields(e) for e in wait_for_ticks(client, start + 5, group, timeout=10 * 2 + 20)]
    ticks = entries[start:]
    assert ticks, "ticks ran"
    for entry in ticks:
        assert entry.fanned == len(ids), entry
        assert entry.evaluated == len(ids), entry
        assert entry.missed == 0 and entry.late == 0, entry
        assert entry.tick_task_ms > 0, "the tick task recorded its own time"
    numbers = [e.tick for e in entries]
    assert numbers == sorted(set(numbers)), "each tick summarised once, in order"
    assert client.xlen(keys.DECISIONS) > 0


@pytest.mark.slow
def test_one_task_per_campaign_evaluates_every_campaign_every_tick(
    redis_url: str, market: Path, tmp_path: Path
) -> None:
    """The tick's fan-out at one campaign per task: every tick after the first two is complete.

    200 tasks a tick is 2.5 times the 80 that ``up`` sizes its groups for on 2 cores
    (``demo_group_size``: 40 tasks per core and tick), and half of the smallest load measured with
    one campaign per task on 2 cores (``campaign-engine bench --campaigns-per-task 1``: 400 and 700
    campaigns, every one evaluated, the slowest 1.1 and 1.7 s after the tick boundary): room for a
    machine busy with other work, while still one Celery task per campaign.
    """
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = load_campaigns(client, market, CAMPAIGNS_ONE_PER_TASK)
    env = fleet_env(redis_url, tmp_path, market, CE_CAMPAIGNS_PER_TASK="1")
    with running(env, tmp_path / "logs") as group:
        entries = [TickStats.from_fields(e) for e in wait_for_ticks(client, 6, group, timeout=6 * 2 + 60)]
    for entry in entries[2:]:
        assert entry.fanned == len(ids), entry
        assert entry.evaluated == len(ids), entry
        assert entry.missed == entry.late == entry.dropped == 0, entry
        assert entry.tick_task_ms > 0, "the tick task recorded its own time"


@pytest.mark.slow
def test_two_beats_run_each_tick_once(redis_url: str, market: Path, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = load_campaigns(client, market, 20)
    env = fleet_env(redis_url, tmp_path, market)
    with running(env, tmp_path / "logs", beats=2) as group:
        entries = [TickStats.from_fields(e) for e in wait_for_ticks(client, 4, group, timeout=40)]
    numbers = [e.tick for e in entries]
    assert len(numbers) == len(set(numbers))
    for entry in entries[1:]:
        assert entry.fanned == len(ids)
        assert entry.duplicates == 0
    # Every campaign bid at most once per platform per tick.
    placed = decisions.parse(client.xrange(keys.DECISIONS))  # type: ignore[arg-type]
    seen = Counter((d.campaign, d.platform, d.tick) for _id, d in decisions.bids(placed))
    assert seen and max(seen.values()) == 1
    entries = Counter((e.campaign, e.tick) for _id, e in placed)
    assert max(entries.values()) == 1, "one entry per campaign and tick"


def test_campaigns_finish_when_their_flight_ends_or_budget_runs_out(fleet: Fleet, market: Path) -> None:
    from common.models import CampaignSpec, CampaignStatus

    load_campaigns(fleet.r, market, 0)
    pid = next(iter(fleet.scenario.platforms))
    for cid in ("short", "spent", "lowered"):
        end, budget = (12, 1e6) if cid == "short" else (400, 50.0)
        fleet.store.create(CampaignSpec(id=cid, budget=budget, value_per_conversion=400.0, platforms={pid: 0.05},
                                        end_tick=end))  # fmt: skip
    # "spent" spends its whole budget in one tick; "lowered" has its budget cut to what it spent.
    fleet.ledger.reserve("spent", 0, {pid: 50_000_000})
    fleet.ledger.settle("spent", 0, {pid: 50_000_000})
    fleet.ledger.reserve("lowered", 0, {pid: 20_000_000})
    fleet.ledger.settle("lowered", 0, {pid: 12_500_000})
    fleet.store.update("lowered", {"budget": 12.5})
    for t in range(1, 12):
        plan = begin(fleet, t)
        assert plan is not None
        for group in plan.groups:
            evaluate(fleet, group, t)
    assert fleet.store.get("spent").status is CampaignStatus.FINISHED
    assert fleet.store.get("lowered").status is CampaignStatus.FINISHED
    assert fleet.store.get("short").status is CampaignStatus.ACTIVE
    assert fleet.store.ids(CampaignStatus.ACTIVE) == ["short"]
    plan = begin(fleet, 12)
    assert plan is not None and plan.campaigns == 0, "nothing is due once the flight is over"
    assert fleet.store.get("short").status is CampaignStatus.FINISHED
    balance = fleet.ledger.balance("short")
    assert balance.spent > 0 and balance.reserved == 0


def test_the_due_campaigns_are_the_active_ones_in_their_flight(fleet: Fleet, market: Path) -> None:
    from common.models import CampaignSpec, CampaignStatus

    load_campaigns(fleet.r, market, 0)
    pid = next(iter(fleet.scenario.platforms))
    flights = {f"c{i:02d}": (i % 7, i % 7 + 1 + i % 5) for i in range(30)}
    for cid, (start, end) in flights.items():
        fleet.store.create(CampaignSpec(id=cid, budget=1e6, value_per_conversion=40.0, platforms={pid: 0.05},
                                        start_tick=start, end_tick=end))  # fmt: skip
    fleet.store.pause("c03")
    # c04 paused by a change interrupted before it reached the indexes: evaluated but never finished.
    fleet.r.hset(keys.campaign("c04"), "status", CampaignStatus.PAUSED.value)
    for t in range(0, 13):
        expected = sorted(c for c, (start, end) in flights.items() if start <= t < end and c not in ("c03", "c04"))
        due = due_campaigns(fleet, t)
        assert [c for c in due if c != "c04"] == expected
        finished = {c for c, (_, end) in flights.items() if end <= t and c not in ("c03", "c04")}
        assert {c for c in finished if fleet.store.get(c).status is CampaignStatus.FINISHED} == finished
    assert fleet.store.get("c04").status is CampaignStatus.PAUSED
    assert fleet.store.ids(CampaignStatus.ACTIVE) == [], "every flight is over: none is left active"


@pytest.mark.slow
def test_beat_sweeps_reservations_left_open_by_a_crash(redis_url: str, market: Path, tmp_path: Path) -> None:
    """A reservation whose evaluation died before settling is released by the scheduled sweeper."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ids = load_campaigns(client, market, 3)
    settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path, tick_seconds=0.5)
    f = Fleet.from_settings(settings)
    try:
        f.clock.epoch()  # start the fleet's clock now, as the first tick would
        grant = f.ledger.reserve(ids[0], 0, {next(iter(f.store.get(ids[0]).spec.platforms)): 1_000_000})
        assert grant.total > 0 and f.ledger.balance(ids[0]).reserved == grant.total
        env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="0.5", CE_RESERVATION_GRACE_TICKS="2")
        with running(env, tmp_path / "logs") as group:
            deadline = time.monotonic() + 30
            while f.ledger.open_ticks(ids[0]) and time.monotonic() < deadline:
                assert not group.dead(), "a fleet process died"
                time.sleep(0.2)
        balance = f.ledger.balance(ids[0])
        assert 0 not in f.ledger.open_ticks(ids[0])
        assert balance.budget == balance.remaining + balance.reserved + balance.spent
        entries = [e for _id, e in client.xrange(keys.ledger(ids[0]))]
        assert any(e["kind"] == "release" and e["tick"] == "0" and int(e["amount"]) == grant.total for e in entries)
    finally:
        f.close()
        client.close()


class _CrashAfterCharging:
    """A platform that charges the bids and then the evaluating process dies before it settles."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.charged: dict[str, float] = {}

    def submit(self, tick: int, orders: list[object]) -> list[object]:
        outcomes = self.inner.submit(tick, orders)  # type: ignore[attr-defined]
        for order, out in zip(orders, outcomes, strict=True):
            cid = order.bid.campaign  # type: ignore[attr-defined]
            self.charged[cid] = self.charged.get(cid, 0.0) + out.cost
        if orders:
            raise SystemExit("worker killed after the platform charged")
        return outcomes


def test_a_crash_between_bidding_and_settling_is_charged_in_full(fleet: Fleet, market: Path) -> None:
    from common.ledger.sweeper import sweep_all
    from common.money import from_micros

    ids = load_campaigns(fleet.r, market, 6)
    for t in range(1, 4):
        plan = begin(fleet, t)
        assert plan is not None
        if t < 3:
            for group in plan.groups:
                evaluate(fleet, group, t)
    crashing = _CrashAfterCharging(fleet.platforms)
    fleet.platforms = crashing  # type: ignore[assignment]
    before = {cid: fleet.ledger.balance(cid).spent for cid in ids}
    with pytest.raises(SystemExit):
        evaluate(fleet, ids, 3)
    assert crashing.charged, "bids went out"
    # A redelivery of the same evaluation bids nothing more.
    assert evaluate(fleet, ids, 3).placed == []
    sweep_all(fleet.ledger, current_tick=3 + 5, grace_ticks=3)
    for cid in ids:
        balance = fleet.ledger.balance(cid)
        assert balance.reserved == 0 and fleet.ledger.open_ticks(cid) == []
        assert balance.budget == balance.remaining + balance.spent
        charged = crashing.charged.get(cid, 0.0)
        assert from_micros(balance.spent - before[cid]) >= charged - 1e-9, (cid, balance, charged)
