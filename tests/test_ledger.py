"""The ledger's operations one by one against a real Redis, refusals included."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cli.redis_server import free_port
from common import keys
from common.errors import Conflict, InvalidInput, LedgerError, LedgerFault, NotFound, StoreUnavailable
from common.ledger import (
    MAX_MICROS,
    AdjustRefused,
    Balance,
    Grant,
    Ledger,
    LedgerInputError,
    NoReservation,
    NotReservable,
    ReservationReleased,
    ReservationSettled,
    ReservationState,
    ReservationSubmitted,
    Settlement,
    Swept,
    UnknownBudget,
)
from tests.ledger_helpers import audit, make_campaign, snapshot


@pytest.fixture(params=["str", "bytes"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[redis.Redis]:
    """Both kinds of client the engine may hand the ledger: decoded and raw."""
    c = redis.Redis.from_url(redis_url, decode_responses=request.param == "str")
    yield c
    c.close()


@pytest.fixture
def ledger(client: redis.Redis) -> Ledger:
    return Ledger(client)


@pytest.fixture
def c1(client: redis.Redis, ledger: Ledger) -> str:
    """An active campaign with a budget of 1000 micro-units."""
    make_campaign(client, "c1")
    ledger.open("c1", 1000)
    return "c1"


def _t(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def refused_without_change(
    client: Any, error: type[Exception], call: Any, *args: Any, match: str | None = None, **kwargs: Any
) -> Exception:
    before = snapshot(client)
    with pytest.raises(error, match=match) as info:
        call(*args, **kwargs)
    assert snapshot(client) == before
    return info.value


# --- open, balance, adjust ----------------------------------------------------------------------
def test_open_writes_budget_and_one_adjust_entry(client: redis.Redis, ledger: Ledger) -> None:
    assert ledger.open("c1", 5_000_000) == Balance(5_000_000, 5_000_000, 0, 0)
    assert ledger.balance("c1") == Balance(5_000_000, 5_000_000, 0, 0)
    assert audit(client, "c1").sums == {"adjust": 5_000_000}


def test_open_twice_changes_nothing(client: redis.Redis, ledger: Ledger) -> None:
    ledger.open("c1", 100)
    before = snapshot(client)
    assert ledger.open("c1", 999) == Balance(100, 100, 0, 0)
    assert snapshot(client) == before


@pytest.mark.parametrize(
    ("budget", "field"),
    [(0, "budget"), (-5, "budget"), (1.5, "budget"), (True, "budget"), (MAX_MICROS + 1, "budget"), ("7", "budget")],
)
def test_open_refuses_bad_budget(client: redis.Redis, ledger: Ledger, budget: Any, field: str) -> None:
    err = refused_without_change(client, LedgerInputError, ledger.open, "c1", budget)
    assert isinstance(err, InvalidInput) and err.errors[0][0] == field


@pytest.mark.parametrize("cid", ["", "a b", "{c}", "x" * 65, 7])
def test_bad_campaign_id_is_refused(ledger: Ledger, cid: Any) -> None:
    with pytest.raises(LedgerInputError, match="campaign"):
        ledger.open(cid, 10)


def test_balance_of_unknown_campaign(ledger: Ledger) -> None:
    with pytest.raises(UnknownBudget) as info:
        ledger.balance("nope")
    assert isinstance(info.value, NotFound)
    assert ledger.balances(["nope"]) == {}


def test_largest_amounts_stay_exact(client: redis.Redis, ledger: Ledger) -> None:
    make_campaign(client, "big")
    ledger.open("big", MAX_MICROS)
    grant = ledger.reserve("big", 0, {"a": MAX_MICROS - 1, "b": MAX_MICROS})
    assert grant.granted == {"a": MAX_MICROS - 1, "b": 1}
    settled = ledger.settle("big", 0, {"a": MAX_MICROS - 2})
    assert settled.returned == 2 and settled.remaining == 2
    assert ledger.balance("big") == Balance(MAX_MICROS, 2, 0, MAX_MICROS - 2)
    audit(client, "big", expect_open=False)


def test_adjust_raises_and_lowers(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 0, {"a": 300})
    assert ledger.adjust(c1, 500) == Balance(1500, 1200, 300, 0)
    assert ledger.adjust(c1, -1200) == Balance(300, 0, 300, 0)  # exactly down to spent + reserved
    audit(client, c1)


def test_adjust_below_spent_plus_reserved_is_refused(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 0, {"a": 300})
    ledger.settle(c1, 0, {"a": 200})
    err = refused_without_change(client, AdjustRefused, ledger.adjust, c1, -801, match="below spent \\+ reserved")
    assert "at most 800" in str(err) and "c1" in str(err)


def test_adjust_with_the_same_op_id_applies_once(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    assert ledger.adjust(c1, 250, op_id="raise-1") == Balance(1250, 1250, 0, 0)
    before = snapshot(client)
    assert ledger.adjust(c1, 250, op_id="raise-1") == Balance(1250, 1250, 0, 0)
    assert snapshot(client) == before
    refused_without_change(client, AdjustRefused, ledger.adjust, c1, 300, match="already applied", op_id="raise-1")
    audit(client, c1)


@pytest.mark.parametrize("delta", [0, 1.0, True, MAX_MICROS + 1])
def test_adjust_refuses_bad_delta(client: redis.Redis, ledger: Ledger, c1: str, delta: Any) -> None:
    refused_without_change(client, LedgerInputError, ledger.adjust, c1, delta, match="delta")


def test_adjust_refuses_overflow_and_unknown_budget(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    refused_without_change(client, AdjustRefused, ledger.adjust, c1, MAX_MICROS, match="exceed")
    refused_without_change(client, UnknownBudget, ledger.adjust, "other", 5)


# --- reserve --------------------------------------------------------------------------------------
def test_reserve_grants_in_full_when_it_fits(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    grant = ledger.reserve(c1, 3, {"search": 200, "social": 100})
    assert grant.granted == {"search": 200, "social": 100}
    assert (grant.remaining, grant.state, grant.replay, grant.total) == (700, ReservationState.OPEN, False, 300)
    assert not grant.usable  # bids wait for submit
    assert ledger.balance(c1) == Balance(1000, 700, 300, 0)
    assert ledger.open_ticks(c1) == [3]
    assert audit(client, c1).sums == {"adjust": 1000, "reserve": 300}


def test_reserve_fills_platforms_in_order_when_short(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    grant = ledger.reserve(c1, 0, {"b": 700, "a": 500, "c": 100})
    assert list(grant.granted.items()) == [("b", 700), ("a", 300), ("c", 0)]
    assert grant.remaining == 0
    # Nothing left: a later tick is granted zeros, and still recorded so that settle/release work.
    empty = ledger.reserve(c1, 1, {"a": 5})
    assert empty.granted == {"a": 0} and empty.state is ReservationState.OPEN
    assert ledger.settle(c1, 1, {}).returned == 0
    audit(client, c1)


def test_reserve_again_returns_the_first_grant(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    first = ledger.reserve(c1, 4, {"a": 100, "b": 50})
    before = snapshot(client)
    again = ledger.reserve(c1, 4, {"a": 999, "z": 1})
    assert snapshot(client) == before
    assert again.replay and again.granted == first.granted and again.state is ReservationState.OPEN
    ledger.settle(c1, 4, {"a": 10})
    assert ledger.reserve(c1, 4, {"a": 1}).state is ReservationState.SETTLED
    ledger.reserve(c1, 5, {"a": 1})
    ledger.release(c1, 5)
    released = ledger.reserve(c1, 5, {"a": 1})
    assert released.replay and released.state is ReservationState.RELEASED and not released.usable


@pytest.mark.parametrize(
    ("status", "start", "end", "tick", "reason"),
    [
        ("paused", 0, None, 5, "campaign is paused"),
        ("finished", 0, None, 5, "campaign is finished"),
        ("active", 10, None, 9, "before the flight starts"),
        ("active", 0, 20, 20, "past the flight"),
        ("active", 0, 20, 25, "past the flight"),
    ],
)
def test_reserve_outside_an_active_flight_is_refused(
    client: redis.Redis, ledger: Ledger, status: str, start: int, end: int | None, tick: int, reason: str
) -> None:
    make_campaign(client, "c9", status=status, start_tick=start, end_tick=end)
    ledger.open("c9", 100)
    err = refused_without_change(client, NotReservable, ledger.reserve, "c9", tick, {"a": 1}, match=reason)
    assert f"campaign c9 tick {tick}" in str(err)


def test_reserve_inside_the_flight_edges(client: redis.Redis, ledger: Ledger) -> None:
    make_campaign(client, "c9", start_tick=10, end_tick=20)
    ledger.open("c9", 100)
    assert ledger.reserve("c9", 10, {"a": 1}).granted == {"a": 1}
    assert ledger.reserve("c9", 19, {"a": 1}).granted == {"a": 1}


def test_reserve_without_campaign_record_or_budget(client: redis.Redis, ledger: Ledger) -> None:
    ledger.open("ghost", 100)
    refused_without_change(client, NotReservable, ledger.reserve, "ghost", 0, {"a": 1}, match="unknown campaign")
    make_campaign(client, "poor")
    refused_without_change(client, UnknownBudget, ledger.reserve, "poor", 0, {"a": 1}, match="no budget")


def test_reserve_refuses_a_malformed_campaign_record(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    client.hset(keys.campaign(c1), "start_tick", "soon")
    refused_without_change(client, NotReservable, ledger.reserve, c1, 0, {"a": 1}, match="start_tick")


@pytest.mark.parametrize(
    ("tick", "caps", "field"),
    [
        (0, {"a": -1}, "caps.a"),
        (0, {"a": 1.5}, "caps.a"),
        (0, {"a": MAX_MICROS + 1}, "caps.a"),
        (0, {}, "caps"),
        (0, {"bad id": 1}, "caps"),
        (0, {"a,b": 1}, "caps"),
        (-1, {"a": 1}, "tick"),
        (True, {"a": 1}, "tick"),
        (0, [("a", 1)], "caps"),
    ],
)
def test_reserve_refuses_bad_input(
    client: redis.Redis, ledger: Ledger, c1: str, tick: Any, caps: Any, field: str
) -> None:
    err = refused_without_change(client, LedgerInputError, ledger.reserve, c1, tick, caps)
    assert isinstance(err, LedgerInputError) and err.errors[0][0] == field


# --- settle -------------------------------------------------------------------------------------
def test_settle_moves_cost_to_spent_and_returns_the_rest(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 2, {"a": 300, "b": 200})
    result = ledger.settle(c1, 2, {"a": 120})
    assert result.spent == {"a": 120, "b": 0}
    assert (result.total, result.returned, result.remaining, result.replay) == (120, 380, 880, False)
    assert ledger.balance(c1) == Balance(1000, 880, 0, 120)
    assert ledger.open_ticks(c1) == []
    found = audit(client, c1, expect_open=False)
    assert found.sums == {"adjust": 1000, "reserve": 500, "settle": 120, "release": 380}


def test_settle_whole_grant_tells_the_caller_the_budget_is_gone(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 0, {"a": 2000})
    assert ledger.settle(c1, 0, {"a": 1000}).remaining == 0
    assert ledger.balance(c1) == Balance(1000, 0, 0, 1000)


def test_settle_again_returns_the_first_result(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 2, {"a": 300})
    first = ledger.settle(c1, 2, {"a": 100})
    before = snapshot(client)
    again = ledger.settle(c1, 2, {"a": 250})
    assert snapshot(client) == before
    assert again.replay and again.spent == first.spent and again.returned == first.returned


def test_settle_above_grant_or_on_another_platform_is_charged_in_full(
    client: redis.Redis, ledger: Ledger, c1: str
) -> None:
    """A platform that overshoots a cap, or charges where nothing was granted: the cost is never clipped."""
    ledger.reserve(c1, 2, {"a": 300, "b": 0})
    result = ledger.settle(c1, 2, {"a": 301, "b": 1, "zz": 2})
    assert result.spent == {"a": 301, "b": 1, "zz": 2} and list(result.spent) == ["a", "b", "zz"]
    assert (result.returned, result.extra, result.overdrawn, result.unreserved) == (0, 4, 0, False)
    assert ledger.balance(c1) == Balance(1000, 696, 0, 304)
    before = snapshot(client)
    assert ledger.settle(c1, 2, {"a": 301, "b": 1, "zz": 2}).replay
    assert snapshot(client) == before
    found = audit(client, c1, expect_open=False)
    assert found.sums == {"adjust": 1000, "reserve": 300, "settle": 300, "charge": 4}


def test_a_charge_beyond_remaining_is_overdraft(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 2, {"a": 990})
    result = ledger.settle(c1, 2, {"a": 1003})
    assert (result.remaining, result.extra, result.overdrawn) == (0, 13, 3)
    # budget + overdraft == remaining + reserved + spent: 1000 + 3 == 0 + 0 + 1003
    assert ledger.balance(c1) == Balance(1000, 0, 0, 1003, 3)
    found = audit(client, c1, expect_open=False)
    assert found.sums == {"adjust": 1000, "reserve": 990, "settle": 990, "charge": 10, "overdraft": 3}
    # An operator who raises the budget afterwards gives remaining the raise; the overdraft stays on record.
    assert ledger.adjust(c1, 50) == Balance(1050, 50, 0, 1003, 3)
    audit(client, c1, expect_open=False)


def test_settle_without_a_reservation_is_charged_as_unreserved(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    """The reserve and submit were lost (a failover), the bids went out: the cost is still recorded."""
    result = ledger.settle(c1, 7, {"a": 5})
    assert (result.unreserved, result.extra, result.returned, result.remaining) == (True, 5, 0, 995)
    assert ledger.balance(c1) == Balance(1000, 995, 0, 5)
    before = snapshot(client)
    assert ledger.settle(c1, 7, {"a": 5}).replay
    assert snapshot(client) == before
    again = ledger.reserve(c1, 7, {"a": 10})  # the tick is done: a late reserve bids nothing
    assert again.replay and again.state is ReservationState.SETTLED and not again.usable
    assert audit(client, c1, expect_open=False).states == {7: "settled"}


def test_settle_after_release_is_charged_as_unreserved(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    """The submit was lost, so the sweeper released the grant; the bids' cost still arrives and counts."""
    ledger.reserve(c1, 7, {"a": 10, "b": 4})
    assert ledger.sweep([c1], 8) == Swept(released=1)
    result = ledger.settle(c1, 7, {"a": 6})
    assert (result.unreserved, result.extra, result.returned, result.remaining) == (True, 6, 0, 994)
    assert ledger.balance(c1) == Balance(1000, 994, 0, 6)
    assert _record(client, c1, 7)["released"] == "14"
    found = audit(client, c1, expect_open=False)
    assert found.sums == {"adjust": 1000, "reserve": 14, "release": 14, "charge": 6}


def test_a_late_settle_above_the_sweepers_charge_adds_the_difference(
    client: redis.Redis, ledger: Ledger, c1: str
) -> None:
    ledger.reserve(c1, 1, {"a": 100, "b": 50})
    ledger.submit(c1, 1)
    assert ledger.sweep([c1], 5) == Swept(charged=1)
    late = ledger.settle(c1, 1, {"a": 120, "b": 10})
    assert (late.replay, late.spent, late.extra) == (False, {"a": 120, "b": 50}, 20)
    assert ledger.balance(c1) == Balance(1000, 830, 0, 170)
    before = snapshot(client)
    assert ledger.settle(c1, 1, {"a": 120, "b": 10}).replay
    assert snapshot(client) == before
    assert audit(client, c1, expect_open=False).charged_by_sweeper == {1}


@pytest.mark.parametrize(("costs", "field"), [({"a": -1}, "costs.a"), ({"a": 0.5}, "costs.a"), ({"": 1}, "costs")])
def test_settle_refuses_bad_input(client: redis.Redis, ledger: Ledger, c1: str, costs: Any, field: str) -> None:
    ledger.reserve(c1, 1, {"a": 10})
    err = refused_without_change(client, LedgerInputError, ledger.settle, c1, 1, costs)
    assert isinstance(err, LedgerInputError) and err.errors[0][0] == field


# --- submit -------------------------------------------------------------------------------------
def _record(client: redis.Redis, cid: str, tick: int) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in client.hgetall(keys.reservation(cid, tick)).items()
    }


def test_submit_moves_an_open_reservation_to_submitted(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 3, {"search": 200, "social": 100})
    before = snapshot(client)
    sub = ledger.submit(c1, 3)
    assert sub.granted == {"search": 200, "social": 100} and list(sub.granted) == ["search", "social"]
    assert (sub.state, sub.replay, sub.remaining, sub.usable) == (ReservationState.SUBMITTED, False, 700, True)
    # Only the record's state changed: no money moved, no stream entry, still unsettled.
    after = snapshot(client)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {keys.reservation(c1, 3)} and _record(client, c1, 3)["state"] == "submitted"
    assert ledger.balance(c1) == Balance(1000, 700, 300, 0)
    assert ledger.open_ticks(c1) == [3]
    assert audit(client, c1).states == {3: "submitted"}
    assert ledger.reserve(c1, 3, {"a": 1}).state is ReservationState.SUBMITTED


def test_submit_again_is_a_replay_that_writes_nothing(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 3, {"a": 50})
    first = ledger.submit(c1, 3)
    before = snapshot(client)
    again = ledger.submit(c1, 3)
    assert snapshot(client) == before
    assert again.replay and again.granted == first.granted and again.state is ReservationState.SUBMITTED
    assert not again.usable  # its bids may already be out: bid nothing on a replay


def test_submit_of_a_zero_grant(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 0, {"a": 1000})
    ledger.reserve(c1, 1, {"a": 5})
    sub = ledger.submit(c1, 1)
    assert sub.granted == {"a": 0} and sub.total == 0 and sub.usable
    assert ledger.settle(c1, 1, {}).returned == 0
    audit(client, c1)


def test_submit_is_refused_when_no_bid_may_be_placed(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    err = refused_without_change(client, NoReservation, ledger.submit, c1, 7, match="never reserved; do not bid")
    assert "campaign c1 tick 7" in str(err)
    ledger.reserve(c1, 7, {"a": 10})
    ledger.release(c1, 7)
    err = refused_without_change(client, ReservationReleased, ledger.submit, c1, 7, match="released.*do not bid")
    assert isinstance(err, Conflict)
    ledger.reserve(c1, 8, {"a": 10})
    ledger.settle(c1, 8, {"a": 4})
    err = refused_without_change(client, ReservationSettled, ledger.submit, c1, 8, match="settled.*do not bid")
    assert isinstance(err, Conflict)
    # A submitted and then settled reservation: submit refuses too (the first reply was the one to bid on).
    ledger.reserve(c1, 9, {"a": 10})
    ledger.submit(c1, 9)
    ledger.settle(c1, 9, {"a": 10})
    refused_without_change(client, ReservationSettled, ledger.submit, c1, 9)
    audit(client, c1, expect_open=False)


@pytest.mark.parametrize(("cid", "tick", "field"), [("c1", -1, "tick"), ("c1", True, "tick"), ("a b", 0, "campaign")])
def test_submit_refuses_bad_input(
    client: redis.Redis, ledger: Ledger, c1: str, cid: Any, tick: Any, field: str
) -> None:
    ledger.reserve(c1, 0, {"a": 10})
    err = refused_without_change(client, LedgerInputError, ledger.submit, cid, tick)
    assert isinstance(err, LedgerInputError) and err.errors[0][0] == field
    with pytest.raises(LedgerInputError):
        ledger.submit_many([(c1, 0), (cid, tick)])
    assert ledger.open_ticks(c1) == [0] and _record(client, c1, 0)["state"] == "open"


def test_settle_of_a_submitted_reservation(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 2, {"a": 300, "b": 200})
    ledger.submit(c1, 2)
    result = ledger.settle(c1, 2, {"a": 120})
    assert (result.spent, result.returned, result.remaining, result.replay) == ({"a": 120, "b": 0}, 380, 880, False)
    assert ledger.balance(c1) == Balance(1000, 880, 0, 120)
    before = snapshot(client)
    assert ledger.settle(c1, 2, {"a": 7}).replay
    assert snapshot(client) == before
    found = audit(client, c1, expect_open=False)
    assert found.states == {2: "settled"} and not found.charged_by_sweeper


def test_release_of_a_submitted_reservation_is_refused(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 4, {"a": 100})
    ledger.submit(c1, 4)
    err = refused_without_change(client, ReservationSubmitted, ledger.release, c1, 4, match="submitted")
    assert isinstance(err, Conflict) and "campaign c1 tick 4" in str(err)
    assert ledger.settle(c1, 4, {"a": 30}).total == 30
    assert ledger.release(c1, 4) == 0  # settled now: nothing to release, as before


def test_submit_many_keeps_refusals_in_place(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    make_campaign(client, "c2")
    ledger.open("c2", 10)
    ledger.reserve_many([(c1, 1, {"a": 100}), (c1, 2, {"a": 50}), ("c2", 1, {"a": 10}), (c1, 3, {"a": 1})])
    ledger.release(c1, 2)
    ledger.settle(c1, 3, {})
    got = ledger.submit_many([(c1, 1), (c1, 2), ("c2", 1), (c1, 1), (c1, 3), (c1, 9)])
    kinds = [type(g).__name__ for g in got]
    assert kinds == ["Grant", "ReservationReleased", "Grant", "Grant", "ReservationSettled", "NoReservation"]
    first, _, other, again, *_ = got
    assert isinstance(first, Grant) and first.usable and first.granted == {"a": 100} and first.remaining == 900
    assert isinstance(other, Grant) and other.usable and other.campaign == "c2" and other.remaining == 0
    assert isinstance(again, Grant) and again.replay and not again.usable
    assert ledger.submit_many([]) == []
    audit(client, c1)
    audit(client, "c2")


# --- release and sweep --------------------------------------------------------------------------
def test_release_is_idempotent_and_leaves_settled_alone(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 1, {"a": 100, "b": 20})
    assert ledger.release(c1, 1) == 120
    before = snapshot(client)
    assert ledger.release(c1, 1) == 120
    assert snapshot(client) == before
    ledger.reserve(c1, 2, {"a": 100})
    ledger.settle(c1, 2, {"a": 60})
    before = snapshot(client)
    assert ledger.release(c1, 2) == 0
    assert ledger.release(c1, 99) == 0
    assert snapshot(client) == before
    assert audit(client, c1, expect_open=False).sums["release"] == 120 + 40


def test_sweep_releases_only_ticks_before_the_cutoff(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    make_campaign(client, "c2")
    ledger.open("c2", 50)
    for tick in range(6):
        ledger.reserve(c1, tick, {"a": 10})
    ledger.settle(c1, 1, {"a": 4})
    ledger.reserve("c2", 0, {"a": 50})
    assert ledger.sweep([c1, "c2", "c1"], 4) == Swept(released=4)  # c1 ticks 0, 2, 3 and c2 tick 0
    assert ledger.open_ticks(c1) == [4, 5]
    assert ledger.sweep([c1, "c2"], 4) == Swept()
    assert ledger.balance("c2") == Balance(50, 50, 0, 0)
    audit(client, c1)
    assert ledger.sweep([c1], 6).closed == 2
    audit(client, c1, expect_open=False)


def test_sweep_before_the_grace_has_passed_releases_nothing(ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 0, {"a": 1})
    assert ledger.sweep([c1], 0) == Swept()
    assert ledger.sweep([c1], -3) == Swept()
    assert ledger.open_ticks(c1) == [0]
    with pytest.raises(LedgerInputError, match="before_tick"):
        ledger.sweep([c1], 1.5)  # type: ignore[arg-type]


def test_sweep_pages_through_many_open_reservations(
    client: redis.Redis, ledger: Ledger, c1: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("common.ledger.ledger.SWEEP_PAGE", 3)
    ledger.reserve_many((c1, tick, {"a": 1}) for tick in range(10))
    ledger.submit_many((c1, tick) for tick in range(0, 10, 3))
    assert ledger.sweep([c1], 100) == Swept(released=6, charged=4)
    audit(client, c1, expect_open=False)


def test_sweep_all_uses_the_campaign_index(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    from common.ledger.sweeper import sweep_all

    client.sadd(keys.CAMPAIGNS, c1)
    for tick in range(5):
        ledger.reserve(c1, tick, {"a": 1})
    assert sweep_all(ledger, current_tick=5, grace_ticks=3) == 2
    assert sweep_all(ledger, current_tick=2, grace_ticks=3) == 0
    assert ledger.open_ticks(c1) == [2, 3, 4]


def test_sweep_charges_a_submitted_reservation_at_its_full_grant(
    client: redis.Redis, ledger: Ledger, c1: str, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.reserve(c1, 1, {"a": 100, "b": 20, "c": 0})
    ledger.submit(c1, 1)
    assert ledger.sweep([c1], 2) == Swept(charged=1)
    # Every grant is charged: the platforms may have spent up to it, the ledger must not under-count.
    assert ledger.balance(c1) == Balance(1000, 880, 0, 120)
    record = _record(client, c1, 1)
    assert record["state"] == "settled" and record["charged_by"] == "sweeper"
    assert (record["c:a"], record["c:b"], record["c:c"], record["spent"], record["returned"]) == (
        "100",
        "20",
        "0",
        "120",
        "0",
    )
    found = audit(client, c1, expect_open=False)
    assert found.charged_by_sweeper == {1} and found.sums["settle"] == 120 and found.sums["release"] == 0
    stream: list[Any] = client.xrange(keys.ledger(c1))  # type: ignore[assignment]
    entries = [{_t(k): _t(v) for k, v in f.items()} for _, f in stream]
    assert [(e["kind"], e["platform"], e["amount"], e.get("by")) for e in entries if e["kind"] == "settle"] == [
        ("settle", "a", "100", "sweeper"),
        ("settle", "b", "20", "sweeper"),
    ]
    # The late real settle is a replay of the full charge; it says so, and writes nothing.
    before = snapshot(client)
    with caplog.at_level("WARNING", logger="common.ledger.ledger"):
        late = ledger.settle(c1, 1, {"a": 60})
    assert late.replay and late.spent == {"a": 100, "b": 20, "c": 0} and late.returned == 0
    assert "the first settlement stands" in caplog.text
    assert snapshot(client) == before
    assert ledger.sweep([c1], 2) == Swept()
    assert ledger.release(c1, 1) == 0


def test_a_settle_before_the_sweep_wins(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    ledger.reserve(c1, 1, {"a": 100})
    ledger.submit(c1, 1)
    ledger.settle(c1, 1, {"a": 30})
    before = snapshot(client)
    assert ledger.sweep([c1], 5) == Swept()
    assert snapshot(client) == before
    assert ledger.balance(c1) == Balance(1000, 970, 0, 30)


def test_a_submit_after_the_sweep_released_is_refused(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    """An evaluation stalled past the cut-off: its reservation was released, so it must not bid."""
    ledger.reserve(c1, 1, {"a": 100})
    assert ledger.sweep([c1], 2) == Swept(released=1)
    refused_without_change(client, ReservationReleased, ledger.submit, c1, 1)
    assert ledger.balance(c1) == Balance(1000, 1000, 0, 0)


def test_sweep_over_a_mix_of_states(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    from common.ledger.sweeper import sweep_all

    make_campaign(client, "c2")
    ledger.open("c2", 500)
    client.sadd(keys.CAMPAIGNS, c1, "c2")
    for tick in range(8):
        ledger.reserve(c1, tick, {"a": 10, "b": 5})
    ledger.reserve("c2", 0, {"x": 200})
    ledger.reserve("c2", 6, {"x": 100})
    ledger.submit_many([(c1, 1), (c1, 2), (c1, 3), (c1, 6), ("c2", 0), ("c2", 6)])
    ledger.settle(c1, 2, {"a": 7})  # submitted and settled
    ledger.settle(c1, 4, {"b": 5})  # settled without submit
    ledger.release(c1, 5)
    # Due (tick < 6): c1 0 open, 1 and 3 submitted; c2 0 submitted. Ticks 6 and 7 are not due yet.
    assert ledger.sweep([c1, "c2"], 6) == Swept(released=1, charged=3)
    states = audit(client, c1).states
    assert states == {
        0: "released",
        1: "settled",
        2: "settled",
        3: "settled",
        4: "settled",
        5: "released",
        6: "submitted",
        7: "open",
    }
    assert audit(client, c1).charged_by_sweeper == {1, 3}
    assert ledger.balance(c1) == Balance(1000, 1000 - 30 - 7 - 5 - 30, 30, 30 + 7 + 5)
    assert ledger.balance("c2") == Balance(500, 200, 100, 200)
    assert sweep_all(ledger, current_tick=10, grace_ticks=2) == 3  # c1 6 charged, 7 released; c2 6 charged
    assert audit(client, c1, expect_open=False).charged_by_sweeper == {1, 3, 6}
    assert audit(client, "c2", expect_open=False).charged_by_sweeper == {0, 6}
    assert ledger.balance("c2") == Balance(500, 200, 0, 300)


# --- batches ------------------------------------------------------------------------------------
def test_reserve_many_and_settle_many(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    make_campaign(client, "c2", status="paused")
    ledger.open("c2", 10)
    grants = ledger.reserve_many([(c1, 1, {"a": 100}), ("c2", 1, {"a": 5}), (c1, 2, {"a": 950}), (c1, 1, {"a": 3})])
    assert [type(g).__name__ for g in grants] == ["Grant", "NotReservable", "Grant", "Grant"]
    assert grants[2].granted == {"a": 900}  # type: ignore[union-attr]
    assert grants[3].replay and grants[3].granted == {"a": 100}  # type: ignore[union-attr]
    settled = ledger.settle_many([(c1, 1, {"a": 100}), (c1, 2, {"a": 900}), (c1, 2, {"a": 901}), ("c3", 1, {})])
    assert [type(s).__name__ for s in settled] == ["Settlement", "Settlement", "Settlement", "UnknownBudget"]
    assert [s.replay for s in settled if isinstance(s, Settlement)] == [False, False, True]
    assert ledger.balance(c1) == Balance(1000, 0, 0, 1000)
    audit(client, c1, expect_open=False)


def test_batch_with_bad_input_sends_nothing(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    before = snapshot(client)
    with pytest.raises(LedgerInputError, match=r"caps\.a"):
        ledger.reserve_many([(c1, 1, {"a": 5}), (c1, 2, {"a": -5})])
    assert snapshot(client) == before
    assert ledger.reserve_many([]) == [] and ledger.settle_many([]) == []


# --- the store boundary -----------------------------------------------------------------------
def test_unreachable_redis_is_store_unavailable() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    ledger = Ledger(client)
    with pytest.raises(StoreUnavailable):
        ledger.reserve("c1", 0, {"a": 1})
    with pytest.raises(StoreUnavailable):
        ledger.reserve_many([("c1", 0, {"a": 1})])
    with pytest.raises(StoreUnavailable):
        ledger.balance("c1")
    with pytest.raises(StoreUnavailable):
        ledger.sweep(["c1"], 5)
    with pytest.raises(StoreUnavailable):
        ledger.submit("c1", 0)
    with pytest.raises(StoreUnavailable):
        ledger.submit_many([("c1", 0)])


def test_an_error_reply_that_is_not_a_refusal_is_raised_as_it_is(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    """A key of the wrong type is damaged data, not an outage: neither a refusal nor StoreUnavailable."""
    client.set(keys.budget("c2"), "not a hash")
    make_campaign(client, "c2")
    with pytest.raises(redis.ResponseError) as info:
        ledger.reserve("c2", 0, {"a": 1})
    assert not isinstance(info.value, LedgerError | StoreUnavailable), info.value


def test_an_error_reply_in_a_batch_stays_with_its_campaign(client: redis.Redis, ledger: Ledger, c1: str) -> None:
    """One damaged campaign in a batch is a LedgerFault in its place; the others' calls ran and answer."""
    client.set(keys.budget("c2"), "not a hash")
    make_campaign(client, "c2")
    fine, damaged = ledger.reserve_and_submit_many([(c1, 0, {"a": 1}), ("c2", 0, {"a": 1})])
    assert isinstance(damaged, LedgerFault) and "WRONGTYPE" in str(damaged)
    assert not isinstance(fine, Exception) and fine.usable and fine.granted == {"a": 1}
    settled, faulted = ledger.settle_many([(c1, 0, {"a": 1}), ("c2", 0, {"a": 1})])
    assert isinstance(faulted, LedgerError), "c2 was never reserved: refused in its place"
    assert not isinstance(settled, Exception) and settled.spent == {"a": 1}
    assert ledger.balance(c1).spent == 1


def test_reserve_and_submit_in_one_round_trip(client: redis.Redis, ledger: Ledger) -> None:
    """Both steps in one pipeline: a fresh grant is usable, a refused reserve refuses its submit."""
    make_campaign(client, "rs1")
    make_campaign(client, "rs2", status="paused")
    ledger.open("rs1", 1_000)
    ledger.open("rs2", 1_000)
    fresh, refused = ledger.reserve_and_submit_many([("rs1", 4, {"search": 600}), ("rs2", 4, {"search": 600})])
    assert not isinstance(fresh, Exception) and fresh.usable and fresh.state is ReservationState.SUBMITTED
    assert fresh.granted == {"search": 600}
    assert isinstance(refused, NotReservable)
    again = ledger.reserve_and_submit_many([("rs1", 4, {"search": 600})])[0]
    assert not isinstance(again, Exception) and again.replay and not again.usable
    assert ledger.balance("rs1") == Balance(budget=1_000, remaining=400, reserved=600, spent=0)
    assert ledger.balance("rs2").reserved == 0
    audit(client, "rs1")
    audit(client, "rs2")


def test_a_sweep_is_logged_once(
    client: redis.Redis, ledger: Ledger, c1: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line per sweep, however many pages of campaigns it took."""
    from common.ledger.sweeper import sweep_all

    monkeypatch.setattr("common.ledger.ledger.SWEEP_PAGE", 2)
    make_campaign(client, "c2")
    ledger.open("c2", 500)
    client.sadd(keys.CAMPAIGNS, c1, "c2")
    for tick in range(5):
        ledger.reserve(c1, tick, {"a": 1})
        ledger.reserve("c2", tick, {"a": 1})
    with caplog.at_level("INFO", logger="common"):
        assert sweep_all(ledger, current_tick=8, grace_ticks=3, batch=1) == 10
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert lines == ["sweep of tick 8 released 10 reservations and charged 0 submitted ones at their full grant"]
