"""Past capacity: the over-capacity rule, the fan-out's order by spend at stake, and the signal's readers."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from cli.processes import ProcessGroup
from cli.up import tick_line
from common import keys
from common.fleet import capacity, stake, stats
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.fleet.tick import begin
from common.models import CampaignSpec
from common.redis_conn import connect
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running
from worker import stale

TOKEN = "test-token-123"


# --- the rule, on known summaries -------------------------------------------------------------
def _tick(tick: int, evaluated: int, *, fanned: int = 10, skipped: int = 0) -> TickStats:
    return TickStats(tick=tick, fanned=fanned, evaluated=evaluated, skipped=skipped,
                     missed=fanned - evaluated - skipped)  # fmt: skip


def test_two_short_ticks_running_are_over_capacity_and_one_complete_tick_clears_it() -> None:
    runs: list[TickStats] = []
    previous = None
    for t, evaluated in enumerate([10, 4, 3, 5, 10, 6, 10], start=1):
        entry = _tick(t, evaluated)
        entry = replace(entry, short_run=capacity.short_run(entry, previous))
        runs.append(entry)
        previous = entry
    assert [e.short_run for e in runs] == [0, 1, 2, 3, 0, 1, 0]
    assert [capacity.over_capacity(e) for e in runs] == [False, False, True, True, False, False, False]


def test_a_gap_in_the_ticks_starts_the_run_afresh() -> None:
    before = TickStats(tick=4, fanned=10, evaluated=2, missed=8, short_run=5)
    assert capacity.short_run(_tick(6, 3), before) == 1
    assert capacity.short_run(_tick(5, 3), before) == 6
    assert capacity.short_run(_tick(5, 3), None) == 1


def test_the_evaluated_share_counts_due_campaigns_only() -> None:
    assert capacity.evaluated_share(_tick(1, 6, fanned=10, skipped=2)) == pytest.approx(0.75)
    assert capacity.evaluated_share(_tick(1, 0, fanned=0)) == 1.0
    assert capacity.evaluated_share(_tick(1, 0, fanned=3, skipped=3)) == 1.0


def test_the_tick_line_ends_with_the_capacity() -> None:
    ok = TickStats(tick=7, fanned=10, evaluated=10)
    over = TickStats(tick=8, fanned=100, evaluated=62, missed=38, dropped=38, short_run=2)
    assert tick_line(ok).endswith("ms  capacity ok")
    assert tick_line(over).endswith("ms  over capacity 62%")
    assert tick_line(over).split()[:4] == ["tick", "8", "evaluated", "62/100"]


# --- the fan-out's order ------------------------------------------------------------------------
def test_the_fan_out_goes_out_by_spend_at_stake(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 30)
    spec = fleet.store.get(ids[0]).spec.model_dump()
    # Same budget, half the flight left: twice the stake per tick. Ten times the budget: ten times.
    fleet.store.create(CampaignSpec.model_validate({**spec, "id": "short", "budget": 1000.0, "start_tick": 0,
                                                    "end_tick": 60}))  # fmt: skip
    fleet.store.create(CampaignSpec.model_validate({**spec, "id": "long", "budget": 1000.0, "start_tick": 0,
                                                    "end_tick": 120}))  # fmt: skip
    fleet.store.create(CampaignSpec.model_validate({**spec, "id": "rich", "budget": 10_000.0, "start_tick": 0,
                                                    "end_tick": 120}))  # fmt: skip
    plan = begin(fleet, 20)
    assert plan is not None
    order = [cid for group in plan.groups for cid in group]
    assert sorted(order) == sorted(fleet.store.ids()), "every due campaign, once"
    at_stake = {
        cid: fleet.store.balance(cid).remaining / (c.spec.end_tick - 20)  # type: ignore[operator]
        for cid, c in fleet.store.get_many(order).items()
    }
    assert [at_stake[cid] for cid in order] == sorted(at_stake.values(), reverse=True)
    assert order.index("rich") < order.index("short") < order.index("long")


def test_the_fan_out_order_comes_from_what_the_evaluations_left(fleet: Fleet, market: Path) -> None:
    """After a tick's evaluations the next tick orders by their figures, without a read per campaign,
    in the order the ledger's balances give; a campaign no longer due leaves the hash."""
    ids = load_campaigns(fleet.r, market, 30)
    plan = begin(fleet, 20)
    assert plan is not None
    for group in plan.groups:
        evaluate(fleet, group, 20)
    assert set(fleet.r.hkeys(keys.STAKES)) == set(ids)
    fleet.r.config_resetstat()
    plan = begin(fleet, 21)
    assert plan is not None
    stats: dict[str, dict[str, int]] = fleet.r.info("commandstats")  # type: ignore[assignment]
    assert stats.get("cmdstat_hmget", {}).get("calls", 0) < len(ids), "no balance read per campaign"
    order = [cid for group in plan.groups for cid in group]
    found = fleet.store.get_many(order)
    exact = {cid: stake.stake(fleet.store.balance(cid).remaining, found[cid].spec.end_tick, 21) for cid in order}
    assert order == sorted(order, key=lambda cid: (-exact[cid], cid))
    fleet.store.pause(ids[0])
    begin(fleet, 22)
    assert ids[0] not in fleet.r.hkeys(keys.STAKES)
    fleet.store.resume(ids[0])
    fleet.r.hset(keys.STAKES, ids[1], "damaged")
    plan = begin(fleet, 23)
    assert plan is not None
    assert {cid for group in plan.groups for cid in group} == set(ids), "read afresh where the hash has nothing usable"


def test_a_campaign_left_out_gains_stake_until_it_goes_out_first() -> None:
    # Same remaining budget, one tick further into the flight: more per remaining tick.
    assert stake.stake(1_000_000, 100, 51) > stake.stake(1_000_000, 100, 50)
    assert stake.stake(1_000_000, 100, 100) == 1_000_000, "the last tick holds all that is left"
    assert stake.stake(1_000_000, None, 7) == 1_000_000


# --- the signal through the summaries and the API -------------------------------------------
def test_short_ticks_say_over_capacity_in_summary_health_and_metrics(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 8)
    settings = Settings(redis_url=fleet.settings.redis_url, api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for t in (1, 2, 3):
        assert begin(fleet, t) is not None  # nobody evaluates ticks 1 and 2: both short
    assert [(e.tick, e.short_run) for e in _stream(fleet)] == [(1, 1), (2, 2)]
    with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://127.0.0.1") as client:
        health = client.get("/health", headers=auth).json()
        assert health["over_capacity"] is True and health["short_ticks"] == 2 and health["evaluated_share"] == 0.0
        assert any(reason.startswith("over capacity: 2 ticks running short") for reason in health["reasons"])
        exposed = _samples(client.get("/metrics", headers=auth).text)
        assert exposed["ce_over_capacity"] == 1 and exposed["ce_tick_evaluated_share"] == 0.0
        assert exposed["ce_over_capacity_ticks_total"] == 1
        ticks = client.get("/api/ticks", headers=auth).json()["ticks"]
        assert [t["over_capacity"] for t in ticks] == [False, True]

        # Tick 3 evaluated in full: complete, and the signal clears at once.
        evaluate(fleet, ids, 3)
        assert begin(fleet, 4) is not None
        assert _stream(fleet)[-1].short_run == 0
        health = client.get("/health", headers=auth).json()
        assert health["over_capacity"] is False and health["evaluated_share"] == 1.0
        assert not any(reason.startswith("over capacity") for reason in health["reasons"])
        exposed = _samples(client.get("/metrics", headers=auth).text)
        assert exposed["ce_over_capacity"] == 0 and exposed["ce_tick_evaluated_share"] == 1.0
        assert exposed["ce_over_capacity_ticks_total"] == 1


def _stream(fleet: Fleet) -> list[TickStats]:
    return _stream_of(fleet.r)


def _samples(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels}


# --- stale work ----------------------------------------------------------------------------------
def test_the_tick_trims_past_ticks_evaluations_and_leaves_the_rest(redis_url: str, fleet: Fleet) -> None:
    """Messages as the tick task publishes them; only the oldest run of past ticks' evaluations goes."""
    from worker.app import EVALUATION_QUEUE, create_app
    from worker.tasks import evaluate as evaluate_task

    app = create_app(Settings(redis_url=redis_url))
    deadline = {t: fleet.clock.deadline_of(t) for t in range(1, 5)}
    try:
        with app.producer_or_acquire() as producer:

            def send(group: list[str], tick: int, expiring: bool = True) -> None:
                expires = stale.expires_at(deadline[tick]) if expiring else None
                evaluate_task.apply_async((group, tick, deadline[tick] if expiring else None), expires=expires,
                                          producer=producer)  # fmt: skip

            send(["a", "b"], 1)
            send(["c"], 2)
            send(["d", "e", "f"], 2)
            send(["g"], 3)  # the tick under way: stays
            send(["h"], 2)  # behind a fresh one: stays, a worker drops it
            client = connect(redis_url)
            dropped = stale.trim(client, EVALUATION_QUEUE, [deadline[1], deadline[2]])
            assert dropped == {1: 2, 2: 4}
            assert client.llen(EVALUATION_QUEUE) == 2
            send(["i"], 4, expiring=False)  # a backtest's evaluation, no deadline
            assert stale.trim(client, EVALUATION_QUEUE, [deadline[1], deadline[2], deadline[3]]) == {3: 1, 2: 1}
            assert client.llen(EVALUATION_QUEUE) == 1, "the backtest's stays"
            assert stale.trim(client, EVALUATION_QUEUE, []) == {}
    finally:
        app.close()


# --- a live fleet past its capacity and back --------------------------------------------------
TICK_SECONDS = 1.0
GROUP = 10
# Far more than one worker process evaluates in a 1 s tick.
PROBE = 3000


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_fleet_past_capacity_evaluates_what_it_can_says_so_and_recovers(
    redis_url: str, market: Path, tmp_path: Path
) -> None:
    """One worker process, 1 s ticks: three times what it evaluates per tick for ten ticks, then a third
    of it. Judged on counts only: which tick, how many evaluated, what the signal said.

    What it evaluates per tick is measured past capacity (a probe of PROBE campaigns): below it every
    campaign is evaluated, which says nothing of the ceiling, and extrapolating from the latency of a
    small tick overestimated it fivefold, because the tick task's own cost grows with the campaigns due.
    """
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    load_campaigns(r, market, 100)
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS=str(TICK_SECONDS), CE_CAMPAIGNS_PER_TASK=str(GROUP))
    settings = Settings(redis_url=redis_url, api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running(env, tmp_path / "logs", concurrency=1) as group:
        # The first ticks may begin before the worker process is up (as the bench, skip two).
        warm_up = _summaries_after(r, _last_tick(r), 2, group)
        assert all(e.missed == 0 for e in _summaries_after(r, warm_up[-1].tick, 2, group)), "100 fit in a tick"
        load_campaigns(r, market, PROBE)
        probe = _summaries_after(r, _last_tick(r), 3, group)[1:]
        capacity_per_tick = max(e.evaluated for e in probe)
        overload = 3 * capacity_per_tick
        load_campaigns(r, market, overload)
        ids = sorted(r.smembers(keys.ACTIVE))
        assert len(ids) >= overload

        over = _summaries_after(r, _last_tick(r), 10, group)
        for entry in over:
            assert 0 < entry.evaluated < entry.fanned, f"evaluates what it can, never nothing: {entry}"
        assert all(capacity.over_capacity(e) for e in over[1:]), over
        with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://127.0.0.1") as client:
            health = client.get("/health", headers=auth).json()
            assert health["over_capacity"] is True and health["status"] != "ok", health
            exposed = _samples(client.get("/metrics", headers=auth).text)
            assert exposed["ce_over_capacity"] == 1 and exposed["ce_tick_evaluated_share"] < 1
            assert exposed["ce_over_capacity_ticks_total"] >= len(over) - 1

        # The load falls to a third of what one tick evaluates: keep the first ids, pause the rest.
        kept = max(GROUP, capacity_per_tick // 3)
        store = CampaignStore(r)
        for cid in ids[kept:]:
            store.pause(cid)
        after = _summaries_after(r, _last_tick(r), 3, group)
        complete = [e for e in after if e.missed == 0]
        assert complete, f"a complete tick within three of the fall: {after}"
        assert complete[0].evaluated == complete[0].fanned - complete[0].skipped > 0
        assert not capacity.over_capacity(complete[0]) and complete[0].short_run == 0
        with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://127.0.0.1") as client:
            health = client.get("/health", headers=auth).json()
            assert health["over_capacity"] is False, health
            exposed = _samples(client.get("/metrics", headers=auth).text)
            assert exposed["ce_over_capacity"] == 0 and exposed["ce_tick_evaluated_share"] == 1
    # The tick task trimmed the tails of short ticks before the workers met them, counted as dropped.
    assert sum(e.dropped for e in over) > 0


def _last_tick(r: redis.Redis) -> int:
    return int(r.get(keys.LAST_TICK) or -1)


def _summaries_after(r: redis.Redis, tick: int, count: int, group: ProcessGroup) -> list[TickStats]:
    """The summaries of the ``count`` ticks after ``tick``, once all are written (ticks begun later)."""
    deadline = time.monotonic() + 60 + 4 * count * TICK_SECONDS
    while time.monotonic() < deadline:
        dead = group.dead()
        assert not dead, [c.log_path.read_text()[-3000:] for c in dead]
        found = [e for e in _stream_of(r) if e.tick > tick]
        if len(found) >= count:
            return found[:count]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} ticks summarised after tick {tick}")


def _stream_of(r: redis.Redis[str]) -> list[TickStats]:
    return stats.parse(r.xrange(keys.TICK_STATS))  # type: ignore[arg-type]
