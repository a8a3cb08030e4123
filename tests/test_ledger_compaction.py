"""Compaction: the watermark, what it folds and deletes, and what it refuses afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from common import keys
from common.backtest.runner import InlineExecutor, prepare
from common.fleet import maintenance
from common.fleet.fleet import Fleet
from common.ledger import Balance, Compacted, Ledger, TickCompacted, compaction
from common.market.generator import generate
from common.settings import Settings
from tests.ledger_helpers import audit, make_campaign, snapshot


@pytest.fixture
def ledger(r: redis.Redis) -> Ledger:
    make_campaign(r, "c1")
    ledger = Ledger(r)
    ledger.open("c1", 100_000)
    return ledger


def _run_ticks(ledger: Ledger, ticks: range) -> None:
    for t in ticks:
        ledger.reserve("c1", t, {"a": 100, "b": 50})
        ledger.submit("c1", t)
        ledger.settle("c1", t, {"a": 60 + t % 7, "b": 50})


def test_compaction_folds_history_below_the_watermark(r: redis.Redis, ledger: Ledger) -> None:
    _run_ticks(ledger, range(20))
    ledger.reserve("c1", 20, {"a": 10})
    ledger.release("c1", 20)
    ledger.adjust("c1", 500, op_id="raise")
    before = audit(r, "c1", expect_open=False)
    # The open's entry, then per tick: reserve a and b, settle a and b, release the rest of a.
    assert compaction.compact(ledger, ["c1"], 14) == Compacted(records=15, entries=1 + 15 * 5)
    after = audit(r, "c1", expect_open=False)
    assert after.watermark == 14 and sorted(after.states) == list(range(15, 21))
    assert after.balance == before.balance and after.sums == before.sums
    history = r.hgetall(keys.history("c1"))
    assert int(history["spent:b"]) == 15 * 50 and int(history["records"]) == 15
    # The next step goes on from the watermark; one past the newest tick compacts it all.
    assert compaction.compact(ledger, ["c1"], 30).records == 6
    final = audit(r, "c1", expect_open=False)
    assert final.states == {} and final.stream_entries == 0 and final.balance == before.balance
    assert final.sums == before.sums


def test_ticks_at_or_below_the_watermark_are_refused(r: redis.Redis, ledger: Ledger) -> None:
    _run_ticks(ledger, range(5))
    compaction.compact(ledger, ["c1"], 3)
    before = snapshot(r)
    for call in (
        lambda: ledger.reserve("c1", 2, {"a": 10}),
        lambda: ledger.submit("c1", 3),
        lambda: ledger.settle("c1", 0, {"a": 60}),  # a late duplicate of a settled tick
        lambda: ledger.settle("c1", 1, {"a": 999}),  # or an unreserved one: it must not charge again
    ):
        with pytest.raises(TickCompacted, match="watermark 3"):
            call()
    assert ledger.release("c1", 3) == 0
    assert snapshot(r) == before
    got = ledger.reserve_and_submit_many([("c1", 3, {"a": 1}), ("c1", 5, {"a": 1})])
    assert isinstance(got[0], TickCompacted) and not isinstance(got[1], TickCompacted) and got[1].usable


def test_compaction_stops_below_an_unsettled_reservation(r: redis.Redis, ledger: Ledger) -> None:
    _run_ticks(ledger, range(4))
    ledger.reserve("c1", 4, {"a": 10})
    ledger.submit("c1", 4)
    _run_ticks(ledger, range(5, 9))
    compaction.compact(ledger, ["c1"], 8)
    found = audit(r, "c1")
    assert found.watermark == 3 and found.open_ticks == [4]
    assert ledger.settle("c1", 4, {"a": 10}).total == 10  # its settle is not refused
    compaction.compact(ledger, ["c1"], 8)
    assert audit(r, "c1", expect_open=False).watermark == 8


def test_a_step_is_bounded(r: redis.Redis, ledger: Ledger) -> None:
    _run_ticks(ledger, range(compaction.MAX_SPAN + 10))
    first = compaction.compact(ledger, ["c1"], 10_000)
    assert first.records == compaction.MAX_SPAN
    assert audit(r, "c1").watermark == compaction.MAX_SPAN - 1
    assert compaction.compact(ledger, ["c1"], 10_000).records == 10
    assert audit(r, "c1", expect_open=False).states == {}


def test_a_compaction_that_read_an_old_watermark_does_nothing(r: redis.Redis, ledger: Ledger) -> None:
    _run_ticks(ledger, range(6))
    stale = compaction._first_tick(None, "0", [])
    compaction.compact(ledger, ["c1"], 2)
    before = snapshot(r)
    reply = ledger._run_many([compaction._call("c1", stale, 5)])[0]
    assert reply[:2] == ["moved", 2] and snapshot(r) == before


def test_overdraft_and_unreserved_charges_survive_compaction(r: redis.Redis, ledger: Ledger) -> None:
    ledger.reserve("c1", 0, {"a": 99_000})
    ledger.settle("c1", 0, {"a": 99_500, "zz": 100})  # 600 beyond the grant
    ledger.settle("c1", 1, {"a": 800})  # no reservation: 400 from remaining, 400 overdraft
    assert ledger.balance("c1") == Balance(100_000, 0, 0, 100_400, 400)
    compaction.compact(ledger, ["c1"], 1)
    found = audit(r, "c1", expect_open=False)
    assert found.states == {} and found.sums["overdraft"] == 400 and found.sums["charge"] == 1000
    assert r.hget(keys.history("c1"), "spent:zz") == "100"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_backtest_keeps_its_state_bounded(redis_url: str, tmp_path: Path) -> None:
    """The per-campaign state after 500 ticks is what it was after 250: it does not grow with the flight."""
    scenario = generate(10, 3, 500, 3, late_flights=0.0)
    fleet = Fleet.from_settings(Settings(redis_url=redis_url, run_dir=tmp_path), scenario=scenario)
    prepare(fleet, scenario)
    executor = InlineExecutor(fleet)
    sizes = {}
    for t in range(500):
        executor.run_tick(t)
        if t % maintenance.EVERY_TICKS == maintenance.EVERY_TICKS - 1:
            maintenance.run(fleet, t)
        if t + 1 in (250, 500):
            campaign_keys = list(fleet.r.scan_iter(match="{c:*", count=10_000))
            memory = sum(int(fleet.r.memory_usage(k) or 0) for k in campaign_keys)  # type: ignore[arg-type]
            sizes[t + 1] = (len(campaign_keys), memory)
            for spec in scenario.campaigns:
                assert audit(fleet.r, spec.id).ok
    (keys_then, memory_then), (keys_now, memory_now) = sizes[250], sizes[500]
    assert keys_now <= keys_then * 1.05 and memory_now <= memory_then * 1.1, sizes
    detail = fleet.settings.ledger_detail_ticks + 2 * maintenance.EVERY_TICKS
    assert keys_now <= len(scenario.campaigns) * (2 * detail + 10), sizes
    fleet.r.close()


def test_detail_must_outlast_the_reservation_grace() -> None:
    """Compacting a tick the sweeper has not closed yet would refuse its settle: the settings forbid it."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must exceed CE_RESERVATION_GRACE_TICKS"):
        Settings(reservation_grace_ticks=10, ledger_detail_ticks=12)
    assert Settings(reservation_grace_ticks=10, ledger_detail_ticks=13).ledger_detail_ticks == 13
