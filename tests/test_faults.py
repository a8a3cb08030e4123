"""Faults stay local: a failing platform, a damaged campaign, and the platforms' circuit breakers.

Real Redis, the fleet's own evaluation; the platforms are the simulated market with faults injected
(``FaultyPlatforms``, as ``CE_PLATFORM_FAULTS`` injects them in a running fleet).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from common import keys
from common.fleet import breaker, metrics
from common.fleet.evaluation import GroupReport, evaluate
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from common.ledger.sweeper import sweep_all
from common.market.platforms import FaultyPlatforms
from common.money import to_micros_ceil
from tests.fleet import load_campaigns
from tests.ledger_helpers import audit

TICK = 3


def _ready(fleet: Fleet, market: Path, campaigns: int = 8, ticks: int = TICK) -> list[str]:
    ids = load_campaigns(fleet.r, market, campaigns)
    for t in range(1, ticks + 1):
        assert begin(fleet, t) is not None
    return ids


def _busiest_platform(report: GroupReport) -> str:
    return Counter(p.bid.platform for p in report.placed).most_common(1)[0][0]


def _platform_of_most_bids(fleet: Fleet, market: Path, tmp_path: Path) -> str:
    """Which platform the demo campaigns bid on most at TICK, found on a scratch copy of the run."""
    ids = _ready(fleet, market)
    report = evaluate(fleet, ids, TICK)
    fleet.r.flushall()
    fleet.memo.clear()
    return _busiest_platform(report)


def _spent_at(fleet: Fleet, cid: str, tick: int) -> dict[str, int]:
    """What the ledger charged ``cid`` for ``tick``, per platform, from its settle entries."""
    spent: Counter[str] = Counter()
    for _id, e in fleet.r.xrange(keys.ledger(cid)):
        if e["kind"] == "settle" and e["tick"] == str(tick):
            spent[e["platform"]] += int(e["amount"])
    return dict(spent)


def test_a_platform_that_raises_leaves_its_campaigns_to_the_sweeper_and_settles_the_rest(
    fleet: Fleet, market: Path, tmp_path: Path
) -> None:
    down = _platform_of_most_bids(fleet, market, tmp_path)
    ids = _ready(fleet, market)
    fleet.platforms = FaultyPlatforms(fleet.platforms, {down: "raise"})
    report = evaluate(fleet, ids, TICK)
    assert report.platform_errors[down].startswith("unknown: RuntimeError")
    assert report.unknown, "the campaigns that bid on the failing platform"
    assert all(p.bid.platform != down for p in report.placed)
    others = [p for p in report.placed if p.bid.campaign not in report.unknown]
    assert others, "campaigns bidding only elsewhere placed their bids"
    for cid in ids:
        books = audit(fleet.r, cid, expect_open=cid in report.unknown)
        if cid in report.unknown:
            # Its bids may have reached the platform: the reservation stays submitted for the sweeper.
            assert books.states[TICK] == "submitted"
        elif cid in report.decisions:
            assert fleet.ledger.open_ticks(cid) == []
            placed = sum(to_micros_ceil(p.outcome.cost) for p in report.placed if p.bid.campaign == cid)
            assert sum(_spent_at(fleet, cid, TICK).values()) <= placed
    sweep_all(fleet.ledger, TICK + 10, fleet.settings.reservation_grace_ticks)
    for cid in report.unknown:
        record = fleet.r.hgetall(keys.reservation(cid, TICK))
        assert record["charged_by"] == "sweeper", "charged in full: never less than the platform may have spent"
        audit(fleet.r, cid, expect_open=False)


def test_a_platform_that_refuses_gets_its_grants_back(fleet: Fleet, market: Path, tmp_path: Path) -> None:
    down = _platform_of_most_bids(fleet, market, tmp_path)
    ids = _ready(fleet, market)
    fleet.platforms = FaultyPlatforms(fleet.platforms, {down: "refuse"})
    report = evaluate(fleet, ids, TICK)
    assert report.platform_errors[down].startswith("not placed") and not report.unknown
    for cid in ids:
        audit(fleet.r, cid, expect_open=False)
        assert fleet.ledger.open_ticks(cid) == [], "every reservation settled at once"
        assert _spent_at(fleet, cid, TICK).get(down, 0) == 0, "nothing charged for bids never placed"
    assert fleet.r.hget(keys.METRICS, f"platform:{down}:not_placed") == "1"


def test_a_platform_that_hangs_times_out_alone(fleet: Fleet, market: Path, tmp_path: Path) -> None:
    down = _platform_of_most_bids(fleet, market, tmp_path)
    ids = _ready(fleet, market)
    fleet.settings = fleet.settings.model_copy(update={"platform_timeout_seconds": 0.2})
    fleet.platforms = FaultyPlatforms(fleet.platforms, {down: "hang"}, hang_seconds=1.0)
    report = evaluate(fleet, ids, TICK)
    assert report.platform_errors[down].startswith("unknown: PlatformTimeout")
    assert report.placed and all(p.bid.platform != down for p in report.placed)
    assert fleet.r.hget(keys.METRICS, f"platform:{down}:unknown") == "1"


def test_the_breaker_opens_after_failing_ticks_skips_the_platform_then_tries_it_again(
    fleet: Fleet, market: Path, tmp_path: Path
) -> None:
    down = _platform_of_most_bids(fleet, market, tmp_path)
    ids = _ready(fleet, market, ticks=1)
    fleet.settings = fleet.settings.model_copy(update={"breaker_failures": 2, "breaker_cooldown_ticks": 3})
    healthy = fleet.platforms
    fleet.platforms = FaultyPlatforms(healthy, {down: "refuse"})

    def run(t: int) -> GroupReport:
        assert begin(fleet, t) is not None
        half = len(ids) // 2  # two groups: one failing tick counts once
        first, second = evaluate(fleet, ids[:half], t), evaluate(fleet, ids[half:], t)
        first.breaker_skipped.update(second.breaker_skipped)
        first.platform_errors.update(second.platform_errors)
        return first

    def state(t: int) -> str:
        return breaker.read(fleet.r, [down])[down].state_at(t)

    assert down in run(2).platform_errors and state(3) == breaker.CLOSED, "one failing tick is not enough"
    assert down in run(3).platform_errors
    stored = breaker.read(fleet.r, [down])[down]
    assert (stored.state, stored.failures, stored.open_until, stored.opened) == ("open", 2, 3 + 1 + 3, 1)
    for t in (4, 5, 6):
        skipped = run(t)
        assert state(t) == breaker.OPEN and down not in skipped.platform_errors
        assert skipped.breaker_skipped.get(down, 0) > 0, "bids on it were left out"
        for cid in ids:
            assert fleet.r.hget(keys.reservation(cid, t), f"g:{down}") is None, "nothing reserved for it"
    assert state(7) == breaker.HALF_OPEN
    assert down in run(7).platform_errors, "the trial tick fails: open again"
    assert breaker.read(fleet.r, [down])[down].open_until == 7 + 1 + 3
    fleet.platforms = healthy
    assert state(11) == breaker.HALF_OPEN
    trial = run(11)
    assert not trial.platform_errors and any(p.bid.platform == down for p in trial.placed)
    closed = breaker.read(fleet.r, [down])[down]
    assert (closed.state, closed.failures, closed.opened) == ("closed", 0, 2)
    snapshot = metrics.snapshot(fleet.r)
    assert snapshot.counter(f"platform:{down}:skipped") > 0
    for cid in ids:
        audit(fleet.r, cid, expect_open=False)


def test_health_shows_an_open_breaker(fleet: Fleet, market: Path, redis_url: str) -> None:
    from common.settings import Settings

    _ready(fleet, market, campaigns=1, ticks=1)
    for t in (1, 2, 3):
        breaker.report(fleet.r, t, {"search": "unknown: RuntimeError: down"}, failures=3, cooldown=100)
    with TestClient(
        create_app(Settings(redis_url=redis_url)), client=("127.0.0.1", 50000), base_url="http://localhost"
    ) as c:
        body = c.get("/health").json()
        text = c.get("/metrics").text
    assert body["platforms"]["search"]["breaker"] == "open"
    assert any(r.startswith("platform search skipped until tick 104") for r in body["reasons"])
    assert 'ce_platform_breaker_open{platform="search"} 1.0' in text


def test_a_damaged_campaign_in_a_group_leaves_the_others_alone(fleet: Fleet, market: Path) -> None:
    """An error reply for one campaign's key, in the group's pipelines, stays with that campaign."""
    ids = _ready(fleet, market)
    unreadable, unreservable = ids[0], ids[1]
    fleet.r.set(keys.state(unreadable), "not a hash")
    fleet.r.set(keys.reservation(unreservable, TICK), "not a hash")
    before = fleet.ledger.balance(unreservable)
    report = evaluate(fleet, ids, TICK)
    assert unreadable not in report.decisions and report.skipped >= 1
    assert unreservable in report.decisions and report.refused >= 1, "its reserve failed in its place"
    assert fleet.ledger.balance(unreservable) == before
    rest = [cid for cid in ids[2:] if cid in report.decisions and report.decisions[cid].bids]
    assert rest and {p.bid.campaign for p in report.placed} >= set(rest)
    for cid in rest:
        audit(fleet.r, cid, expect_open=False)


@pytest.mark.parametrize("fault", ["raise", "refuse"])
def test_a_failing_platform_opens_no_gap_in_the_books(fleet: Fleet, market: Path, tmp_path: Path, fault: str) -> None:
    """Whatever fails, each campaign's budget = remaining + reserved + spent, after the sweep too."""
    down = _platform_of_most_bids(fleet, market, tmp_path)
    ids = _ready(fleet, market)
    fleet.platforms = FaultyPlatforms(fleet.platforms, {down: fault})
    evaluate(fleet, ids, TICK)
    sweep_all(fleet.ledger, TICK + 10, fleet.settings.reservation_grace_ticks)
    for cid in ids:
        audit(fleet.r, cid, expect_open=False)
