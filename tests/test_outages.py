"""Outages heal themselves: stale ticks are skipped, `up` keeps following, a real fleet recovers.

The live-fleet tests (slow) run a worker and beat with 1 s ticks against a Redis of their own and a
separate broker, and cause one outage each: the state Redis paused (SIGSTOP) or killed and restarted
from its AOF, the broker restarted, the workers or beat stopped. Each outage lasts
``CE_TEST_OUTAGE_SECONDS`` (3 s by default, so CI stays short; set it to 30 for the full drill). After
it: no tick past its deadline fans out, ticks are complete again within 3 ticks, and every ledger
invariant holds after the sweep (nothing overspent).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rich.console import Console

from cli.processes import ProcessGroup
from cli.redis_server import RedisServer
from cli.up import _follow_ticks, celery_argv, worker_argv
from common import keys
from common.fleet import metrics, stats
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.tick import begin
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns
from tests.ledger_helpers import audit

OUTAGE_SECONDS = float(os.environ.get("CE_TEST_OUTAGE_SECONDS", "3"))
TICK_SECONDS = 1.0
# Ticks after the first one that starts once the outage is over, by which every tick is complete.
HEALED_WITHIN = 3


def test_a_tick_past_its_deadline_is_skipped_unclaimed(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 3)
    assert begin(fleet, 5, deadline=time.time() - 1, now=time.time) is None
    assert not fleet.r.exists(keys.tick_claim(5)), "not claimed: nothing of it ran"
    assert not fleet.r.exists(keys.tick_counters(5)), "nothing fanned out"
    assert metrics.snapshot(fleet.r).counter("ticks_stale") == 1
    assert begin(fleet, 6, deadline=time.time() + 60, now=time.time) is not None, "a live tick runs"


def test_a_tick_that_passes_its_deadline_while_begun_fans_out_nothing(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 3)
    assert begin(fleet, 4) is not None
    readings = iter([0.0, 10.0])  # before the deadline when it begins, past it before the fan-out
    assert begin(fleet, 5, deadline=5.0, now=lambda: next(readings)) is None
    assert fleet.r.exists(keys.tick_claim(5)), "claimed: no other process runs it"
    assert not fleet.r.exists(keys.tick_counters(5))
    last = stats.last(fleet.r)
    assert last is not None and last.tick == 4, "the tick before is summarised all the same"
    assert metrics.snapshot(fleet.r).counter("ticks_stale") == 1


def test_up_follows_the_ticks_through_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always").start()
    out = io.StringIO()
    console = Console(file=out, width=250)
    client = redis.Redis(port=server.port, decode_responses=True)
    client.xadd(keys.TICK_STATS, {"x": "0"})
    done: list[int] = []
    follower = threading.Thread(
        target=lambda: done.append(_follow_ticks(client, ProcessGroup(tmp_path / "logs"), 6.0, console))
    )
    follower.start()
    try:
        time.sleep(0.5)
        server.kill()
        time.sleep(1.5)
        server = RedisServer(tmp_path / "redis", port=server.port, appendonly=True, appendfsync="always").start()
        deadline = time.monotonic() + 5
        while "reachable again" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.1)
        client.xadd(keys.TICK_STATS, TickStats(tick=42, fanned=1, evaluated=1).to_fields())
        follower.join(10)
    finally:
        client.close()
        server.stop()
    text = out.getvalue()
    assert done == [0], text
    assert "redis unreachable" in text and "redis reachable again" in text, text
    assert "tick     42" in text, "ticks after the outage are printed"


# --- a live fleet through outages (slow) -----------------------------------------------------------
OUTAGES = ("pause_redis", "restart_redis", "restart_broker", "stop_workers", "stop_beat")


class LiveFleet:
    """State Redis (AOF, fsync always), a broker, a worker and beat, each stoppable on its own."""

    def __init__(self, tmp_path: Path, market: Path) -> None:
        self.tmp_path = tmp_path
        self.state = RedisServer(tmp_path / "state", appendonly=True, appendfsync="always").start()
        self.broker = RedisServer(tmp_path / "broker", appendonly=False).start()
        self.env = fleet_env(
            self.state.url, tmp_path, market, CE_BROKER_URL=self.broker.url, CE_TICK_SECONDS=str(TICK_SECONDS),
            CE_RESERVATION_GRACE_TICKS="4",
        )  # fmt: skip
        self.client = redis.Redis(port=self.state.port, decode_responses=True)
        self.ids = load_campaigns(self.client, market, 12)
        self.workers = ProcessGroup(tmp_path / "logs-worker")
        self.beat = ProcessGroup(tmp_path / "logs-beat")

    def start_workers(self) -> None:
        self.workers.spawn("worker", worker_argv(f"outage-{os.getpid()}-{time.monotonic_ns()}@%h", 2), self.env)

    def start_beat(self) -> None:
        schedule = str(self.tmp_path / f"beat-{time.monotonic_ns()}")
        self.beat.spawn("beat", celery_argv("-A", "beat", "beat", "-l", "info", "-s", schedule), self.env)

    def restart(self, server: RedisServer, kill: bool) -> RedisServer:
        if kill:
            server.kill()
        else:
            server.stop()
        time.sleep(OUTAGE_SECONDS)
        return RedisServer(
            server.directory, port=server.port, appendonly=server.appendonly, appendfsync=server.appendfsync
        ).start()

    def entries(self) -> list[TickStats]:
        return stats.parse(self.client.xrange(keys.TICK_STATS))

    def wait(self, what: str, until: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = self.workers.dead() + self.beat.dead()
            assert not dead, f"{[c.name for c in dead]} died: see {self.tmp_path}"
            try:
                if until():  # type: ignore[operator]
                    return
            except redis.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s; logs in {self.tmp_path}")

    def close(self) -> None:
        self.beat.stop_all()
        self.workers.stop_all()
        self.client.close()
        self.broker.stop()
        self.state.stop()


@pytest.fixture
def live(tmp_path: Path, market: Path) -> Iterator[LiveFleet]:
    fleet = LiveFleet(tmp_path, market)
    try:
        fleet.start_workers()
        fleet.start_beat()
        yield fleet
    finally:
        fleet.close()


@pytest.mark.slow
@pytest.mark.timeout(120 + 4 * OUTAGE_SECONDS)
@pytest.mark.parametrize("outage", OUTAGES)
def test_the_fleet_heals_after_an_outage(live: LiveFleet, outage: str) -> None:
    live.wait("three complete ticks", lambda: sum(1 for e in live.entries() if e.missed == 0) >= 3, 60)
    if outage == "pause_redis":
        assert live.state.process is not None
        live.state.process.send_signal(signal.SIGSTOP)
        time.sleep(OUTAGE_SECONDS)
        live.state.process.send_signal(signal.SIGCONT)
    elif outage == "restart_redis":
        live.state = live.restart(live.state, kill=True)
    elif outage == "restart_broker":
        live.broker = live.restart(live.broker, kill=True)
    elif outage == "stop_workers":
        live.workers.stop_all()
        time.sleep(OUTAGE_SECONDS)
        live.start_workers()
    else:
        live.beat.stop_all()
        time.sleep(OUTAGE_SECONDS)
        live.start_beat()
    resumed = time.time()
    first = int(live.client.get(keys.LAST_TICK) or 0) + 1

    def healed() -> bool:
        after = [e for e in live.entries() if e.tick >= first]
        return len(after) >= HEALED_WITHIN + 3

    live.wait("ticks after the outage", healed, 30 + 10 * TICK_SECONDS)
    after = [e for e in live.entries() if e.tick >= first]
    # No tick that started after the outage ran late: none fanned out past its deadline.
    late = [e for e in after[HEALED_WITHIN:] if e.missed or e.late or e.dropped]
    assert not late, f"ticks still short {HEALED_WITHIN} ticks after the outage: {late}"
    numbers = [e.tick for e in after]
    assert numbers == sorted(set(numbers)), "each tick summarised once, in order"
    live.beat.stop_all()
    live.workers.stop_all()
    fleet = Fleet.from_settings(Settings(redis_url=live.state.url, tick_seconds=TICK_SECONDS))
    try:
        grace = fleet.settings.reservation_grace_ticks
        from common.ledger.sweeper import sweep_all

        sweep_all(fleet.ledger, fleet.clock.current_tick() + grace + 2, grace)
        for cid in live.ids:
            books = audit(live.client, cid, expect_open=False)  # every invariant, exactly
            assert books.balance.spent <= books.balance.budget
    finally:
        fleet.close()
    print(f"{outage}: {OUTAGE_SECONDS} s, healed {time.time() - resumed:.1f} s after, ticks {numbers}")
