"""One clock for the fleet: Redis time, whatever the machine's own clock says."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from common.fleet import clock, maintenance
from common.fleet.clock import Clock
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from common.settings import Settings
from tests.fleet import load_campaigns
from tests.ledger_helpers import audit

TICK_SECONDS = 2.0
SKEW = 10.0


def _redis_time(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


@pytest.fixture
def skewed(r: redis.Redis) -> Iterator[Callable[[float], Clock]]:
    """Clocks of this process as if its own clock were off by some seconds; closed after the test."""
    made: list[Clock] = []

    def make(skew: float) -> Clock:
        made.append(Clock(r, TICK_SECONDS, local=lambda: time.time() + skew))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_a_skewed_machine_keeps_redis_time(r: redis.Redis, skewed: Callable[[float], Clock]) -> None:
    fast, slow = skewed(SKEW), skewed(-SKEW)
    for c in (fast, slow):
        assert abs(c.now() - _redis_time(r)) < 0.5
    assert fast.offset is not None and abs(fast.offset + SKEW) < 0.5
    assert fast.epoch() == slow.epoch(), "one epoch, set by whoever came first"
    assert fast.current_tick() == slow.current_tick() or abs(fast.now() % TICK_SECONDS) < 0.5


def test_each_process_publishes_its_offset(r: redis.Redis, skewed: Callable[[float], Clock]) -> None:
    skewed(SKEW).now()
    published = clock.offsets(r, _redis_time(r))
    assert [round(o.offset) for o in published] == [-SKEW], "Redis time minus this process's clock"
    assert r.ttl("ce:clock:offsets") > 0, "the hash goes away when nobody measures any more"
    assert clock.offsets(r, _redis_time(r) + clock.OFFSET_TTL + 1) == [], "old measurements are not shown"


def test_the_clock_keeps_its_offset_while_redis_is_unreachable(
    r: redis.Redis, skewed: Callable[[float], Clock]
) -> None:
    from cli.redis_server import free_port

    c = skewed(SKEW)
    c.now()
    c.close()
    c.r = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    c._next_measure = 0.0  # due for a measurement, which fails
    assert abs(c.now() - time.time()) < 0.5, "the last offset stands"
    c.close()
    c.r.close()


def test_a_fast_sweeper_charges_nothing_in_flight(redis_url: str, market: Path, tmp_path: Path) -> None:
    """A worker whose clock runs 10 s fast sweeps by Redis time: the tick under way is not past its grace."""
    settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path, tick_seconds=TICK_SECONDS)
    honest = Fleet.from_settings(settings)
    fast = Fleet.from_settings(settings)
    fast.local_time = lambda: time.time() + SKEW
    try:
        ids = load_campaigns(honest.r, market, 4)
        current = honest.clock.current_tick()
        assert begin(honest, current) is not None
        # An evaluation of the tick under way, its bids out, its settle not yet arrived.
        grants = honest.ledger.reserve_and_submit_many([(cid, current, {"search": 1_000}) for cid in ids])
        assert all(not isinstance(g, Exception) and g.usable for g in grants)
        # By the fast machine's own clock the tick would be past its grace (10 s > 3 ticks of 2 s).
        by_its_own_clock = honest.clock.tick_at(time.time() + SKEW)
        assert by_its_own_clock - settings.reservation_grace_ticks > current
        assert maintenance.run_now(fast).swept == 0, "the sweep task's own path"
        for cid in ids:
            assert honest.ledger.open_ticks(cid) == [current], "still in flight, not charged"
            books = audit(honest.r, cid)
            assert books.balance.spent == 0
    finally:
        honest.close()
        fast.close()


def test_deadlines_are_the_fleet_s(fleet: Fleet, market: Path) -> None:
    """An evaluation on a machine 10 s fast reads its tick's deadline by Redis time: not late."""
    ids = load_campaigns(fleet.r, market, 2)
    fleet.local_time = lambda: time.time() + SKEW
    current = fleet.clock.current_tick()
    assert begin(fleet, current) is not None
    report = evaluate(fleet, ids, current, deadline=fleet.clock.deadline_of(current), now=fleet.clock.now)
    assert report.late == 0 and report.evaluated == len(ids)


def test_health_reports_each_process_s_clock(redis_url: str, skewed: Callable[[float], Clock]) -> None:
    skewed(SKEW).now()
    with TestClient(
        create_app(Settings(redis_url=redis_url)), client=("127.0.0.1", 50000), base_url="http://localhost"
    ) as c:
        body = c.get("/health").json()
        text = c.get("/metrics").text
    (offset,) = body["clock_offsets"].values()
    assert round(offset) == -SKEW
    assert any("s ahead of Redis time" in reason for reason in body["reasons"])
    assert "ce_clock_offset_seconds{" in text
