"""Safe retries: what a client retry can send twice is recognised as the same call the second time.

A retry re-sends the same commands with the same arguments; these tests send them twice, as a retry
after a lost reply does, and check the second changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from common import keys
from common.fleet import state
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.state import StateRecord
from common.fleet.tick import begin, claim
from common.redis_conn import connect, without_retries
from tests.fleet import load_campaigns


def test_a_retried_tick_claim_is_recognised_as_its_own(fleet: Fleet) -> None:
    assert claim(fleet, 7, token="beat-a:1")
    assert claim(fleet, 7, token="beat-a:1"), "the same claimer again: its claim, not another's"
    assert not claim(fleet, 7, token="beat-b:1"), "another claimer loses"
    assert fleet.r.get(keys.tick_claim(7)) == "beat-a:1"


def test_a_retried_evaluation_is_recognised_and_applied_once(fleet: Fleet, market: Path) -> None:
    """The same delivery sent twice (its token) marks, reserves, settles and records each campaign once."""
    ids = load_campaigns(fleet.r, market, 5)
    for t in range(1, 4):
        assert begin(fleet, t) is not None
    first = evaluate(fleet, ids, 3, token="task-1:a")
    states = {cid: state.read(fleet.r, cid) for cid in ids}
    balances = {cid: fleet.ledger.balance(cid) for cid in ids}
    entries = fleet.r.xlen(keys.DECISIONS)
    assert first.placed and first.evaluated == len(ids)
    again = evaluate(fleet, ids, 3, token="task-1:a")
    assert again.duplicates == 0, "its own marks: not taken for another delivery's"
    assert again.placed == [], "a replayed submit bids nothing"
    assert {cid: state.read(fleet.r, cid) for cid in ids} == states, "outcomes added once"
    assert {cid: fleet.ledger.balance(cid) for cid in ids} == balances
    assert fleet.r.xlen(keys.DECISIONS) == entries
    other = evaluate(fleet, ids, 3, token="task-2:b")
    assert other.duplicates == len(ids), "another delivery finds the campaigns taken"


def test_an_evaluation_on_a_server_that_lost_its_scripts_loads_them_and_applies_once(
    fleet: Fleet, market: Path
) -> None:
    """The evaluation sends its scripts by SHA: a server that forgot them (restarted) answers NOSCRIPT,
    having run nothing, and those calls go again once the scripts are loaded."""
    ids = load_campaigns(fleet.r, market, 5)
    for t in range(1, 4):
        assert begin(fleet, t) is not None
    evaluate(fleet, ids, 3)
    before = {cid: state.read(fleet.r, cid) for cid in ids}
    assert begin(fleet, 4) is not None
    fleet.r.script_flush()
    report = evaluate(fleet, ids, 4)
    assert report.evaluated == len(ids) and report.duplicates == 0
    after = {cid: state.read(fleet.r, cid) for cid in ids}
    assert all(after[cid].last_tick == 4 for cid in ids), "every campaign's state recorded"
    spent = {p.bid.campaign: 0.0 for p in report.placed}
    for p in report.placed:
        spent[p.bid.campaign] += p.outcome.cost
    for cid, cost in spent.items():
        # Redis adds in long double: equal to the last bits or so, and far from twice the cost.
        assert after[cid].spend == pytest.approx(before[cid].spend + cost, rel=1e-12), "outcomes added once"
    assert all(fleet.r.get(keys.evaluated(cid, 4)).endswith(state.RECORDED) for cid in ids)  # type: ignore[union-attr]


def test_the_state_script_applies_a_tick_once_for_the_mark_s_holder(r: redis.Redis, fleet: Fleet) -> None:
    from common.engine import Decision, PacingState

    decision = Decision((), PacingState(lam=0.5, tick=4), planned=1.25)
    r.set(keys.evaluated("c1", 4), "tok")
    for expected in (1, 0):  # the first write applies, its retry finds it applied
        pipe = r.pipeline(transaction=False)
        state.queue_record(pipe, "c1", 4, "tok", (2.5, 3.0, 0.25, 10.0), decision)
        assert pipe.execute() == [expected]
    pipe = r.pipeline(transaction=False)
    state.queue_record(pipe, "c1", 4, "someone-else", (2.5, 3.0, 0.25, 10.0), decision)
    assert pipe.execute() == [-1]
    stored = state.read(r, "c1")
    assert (stored.spend, stored.clicks, stored.conversions, stored.value) == (2.5, 3.0, 0.25, 10.0)
    assert stored.lam == 0.5 and stored.last_tick == 4
    # An older tick's write, arriving after, adds its outcomes but leaves the newer decision in place.
    r.set(keys.evaluated("c1", 3), "old")
    pipe = r.pipeline(transaction=False)
    state.queue_record(pipe, "c1", 3, "old", (1.0, 0.0, 0.0, 0.0), Decision((), PacingState(lam=0.9), planned=9.0))
    pipe.execute()
    stored = state.read(r, "c1")
    assert stored.spend == 3.5 and stored.lam == 0.5 and stored.last_tick == 4
    assert StateRecord.from_hash(r.hgetall(keys.state("c1"))) == stored


def test_increments_go_through_a_client_that_never_retries(redis_url: str) -> None:
    retrying = connect(redis_url)
    once = without_retries(retrying)
    try:
        assert retrying.get_retry().get_retries() == 10
        assert once.get_retry().get_retries() == 0
        assert once.connection_pool is not retrying.connection_pool
        once.set("k", "v")
        assert retrying.get("k") == "v", "the same server and database, decoded alike"
    finally:
        retrying.close()
        once.close()
