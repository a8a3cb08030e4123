"""Outages heal themselves: stale ticks are skipped, `up` keeps following, a real fleet recovers.

The live-fleet tests (slow) run a worker and beat with 1 s ticks against a Redis of their own and a
separate broker, and cause one outage each: the state Redis paused (SIGSTOP) or killed and restarted
from its AOF, the broker restarted, the workers or beat stopped. Each outage lasts
``CE_TEST_OUTAGE_SECONDS`` (3 s by default, so CI stays short; set it to 30 for the full drill). After
it: no tick past its deadline fans out, ticks are complete again within 3 ticks, every ledger
invariant holds after the sweep (nothing overspent), and ``/health``, polled over HTTP while the
outage lasts, answered 503 naming what is wrong (the dashboard's banner shows the same reasons).
Each prints one line of what it saw, for the drill's record.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import redis
from rich.console import Console

from cli.processes import ProcessGroup
from cli.redis_server import RedisServer
from cli.up import _follow_ticks, celery_argv, worker_argv
from common import keys
from common.fleet import metrics, stats
from common.fleet.clock import Clock
from common.fleet.fleet import Fleet
from common.fleet.outage import begin_live
from common.fleet.stats import TickStats
from common.fleet.tick import begin, claim, summarize
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns
from tests.ledger_helpers import audit
from tests.test_api_http import api_process

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


def test_a_retried_begin_with_its_claim_s_token_runs_the_tick(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 3)
    assert claim(fleet, 5, "mine"), "an attempt claimed the tick, then the store failed"
    assert begin(fleet, 5, token="other") is None, "another claimer (a second beat) finds it taken"
    assert begin(fleet, 5, token="mine") is not None, "the same task's next attempt runs it"


def test_a_tick_is_summarised_once(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 3)
    assert begin(fleet, 4) is not None and begin(fleet, 5) is not None
    assert summarize(fleet, 4) is None, "written by tick 5's begin; an attempt that failed after it writes none"
    assert [e.tick for e in stats.recent(fleet.r, 10)] == [4]


@pytest.fixture
def restartable(tmp_path: Path, market: Path) -> Iterator[tuple[list[RedisServer], Fleet]]:
    """A fleet on a Redis of its own (AOF, fsync always) that a test kills and starts again."""
    servers = [RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always").start()]
    fleet = Fleet.from_settings(Settings(redis_url=servers[0].url, scenario=market, run_dir=tmp_path))
    load_campaigns(fleet.r, market, 3)  # type: ignore[arg-type]
    try:
        yield servers, fleet
    finally:
        fleet.close()
        servers[-1].stop()


def _start_again(servers: list[RedisServer]) -> None:
    old = servers[-1]
    servers.append(RedisServer(old.directory, port=old.port, appendonly=True, appendfsync="always").start())


def test_a_tick_runs_when_redis_is_back_before_its_deadline(
    restartable: tuple[list[RedisServer], Fleet],
) -> None:
    servers, fleet = restartable
    assert begin(fleet, 4) is not None
    servers[-1].kill()  # beat fired tick 5 as Redis went down
    back = threading.Timer(1.0, _start_again, [servers])
    back.start()
    try:
        plan = begin_live(fleet, 5, deadline=time.time() + 60, now=time.time)
    finally:
        back.join()
    assert plan is not None and plan.campaigns == 3, "the tick ran once Redis was back"
    assert fleet.r.exists(keys.tick_counters(5)) and fleet.r.get(keys.LAST_TICK) == "5"
    assert [e.tick for e in stats.recent(fleet.r, 10)] == [4], "the tick before it summarised once"


def test_a_tick_whose_deadline_passes_while_redis_is_down_gives_way_to_the_next(
    restartable: tuple[list[RedisServer], Fleet],
) -> None:
    servers, fleet = restartable
    assert begin(fleet, 4) is not None
    servers[-1].kill()
    readings = iter(range(100))  # the fleet's time, one second further at each reading
    naps: list[float] = []
    assert begin_live(fleet, 5, deadline=5.0, now=lambda: float(next(readings)), sleep=naps.append) is None
    assert naps, "it tried again before giving up"
    _start_again(servers)
    assert not fleet.r.exists(keys.tick_claim(5)), "nothing of tick 5 ran"
    plan = begin_live(fleet, 6, deadline=time.time() + 60, now=time.time)
    assert plan is not None and plan.campaigns == 3, "the next live tick carries on"
    assert fleet.r.get(keys.LAST_TICK) == "6" and not fleet.r.exists(keys.tick_counters(5))
    assert [e.tick for e in stats.recent(fleet.r, 10)] == [], "tick 4 stays unsummarised, as after any skipped tick"


def test_an_evaluation_that_expires_while_redis_is_down_is_logged_not_raised(
    restartable: tuple[list[RedisServer], Fleet], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker import context, tasks

    servers, fleet = restartable
    monkeypatch.setattr(context, "fleet", lambda: fleet)
    monkeypatch.setattr(tasks, "fleet", lambda: fleet)
    request = SimpleNamespace(args=[["c1", "c2"], 7, None])
    sender = SimpleNamespace(name="ce.evaluate")
    tasks._count_dropped(sender=sender, request=request, expired=True)
    assert fleet.r.hget(keys.tick_counters(7), "dropped") == "2"
    servers[-1].kill()
    tasks._count_dropped(sender=sender, request=request, expired=True)
    assert "2 expired evaluations not counted as dropped" in caplog.text


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
# What /health says during each outage. A stopped beat shows once no tick has started for
# ``TickInfo.stale_after`` (10 s at least): only an outage longer than that can show it.
HEALTH_SAYS = {
    "pause_redis": "redis unreachable",
    "restart_redis": "redis unreachable",
    "restart_broker": "broker unreachable",
    "stop_workers": "no worker heartbeat",
    "stop_beat": "no tick since",
}
BEAT_STOP_SHOWS_AFTER = 10.0 + 3 * TICK_SECONDS
API_TOKEN = "outage-drill-token"


class HealthWatch:
    """Polls ``/health`` over HTTP in a thread while an outage lasts: each answer's status and reasons."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[int, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx2.get(
                    f"{self.url}/health", timeout=10, headers={"Authorization": f"Bearer {API_TOKEN}"}
                )
                body = response.json()
                self.seen.append((response.status_code, list(body.get("reasons", []))))
            except (httpx2.TransportError, ValueError) as exc:
                self.seen.append((0, [f"no answer: {type(exc).__name__}"]))
            self._stop.wait(0.5)

    def said(self, words: str) -> bool:
        return any(code == 503 and any(words in reason for reason in reasons) for code, reasons in self.seen)

    def summary(self) -> str:
        codes = sorted({code for code, _ in self.seen})
        first = next((reasons for code, reasons in self.seen if code == 503), [])
        return f"/health {codes} x{len(self.seen)}: {first[:2]}"


class LiveFleet:
    """State Redis (AOF, fsync always), a broker, a worker and beat, each stoppable on its own."""

    def __init__(self, tmp_path: Path, market: Path) -> None:
        self.tmp_path = tmp_path
        self.state = RedisServer(tmp_path / "state", appendonly=True, appendfsync="always").start()
        self.broker = RedisServer(tmp_path / "broker", appendonly=False).start()
        self.env = fleet_env(
            self.state.url, tmp_path, market, CE_BROKER_URL=self.broker.url, CE_TICK_SECONDS=str(TICK_SECONDS),
            CE_RESERVATION_GRACE_TICKS="4", CE_API_TOKEN=API_TOKEN,
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
    with api_process(live.env, live.tmp_path / "logs-api") as (url, _api):
        stale_before = metrics.snapshot(live.client).counter("ticks_stale")
        last_before = int(live.client.get(keys.LAST_TICK) or 0)
        with HealthWatch(url) as health:
            cause(live, outage)
        resumed = time.time()
        first = int(live.client.get(keys.LAST_TICK) or 0) + 1
        under_way = Clock(live.client, TICK_SECONDS, publish=False).current_tick()  # by the fleet's time

        def healed() -> bool:
            after = [e for e in live.entries() if e.tick >= first]
            return len(after) >= HEALED_WITHIN + 3

        live.wait("ticks after the outage", healed, 30 + 10 * TICK_SECONDS)
        stale = metrics.snapshot(live.client).counter("ticks_stale") - stale_before
    if outage != "stop_beat" or OUTAGE_SECONDS >= BEAT_STOP_SHOWS_AFTER:
        assert health.said(HEALTH_SAYS[outage]), f"/health during {outage}: {health.seen}"
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
        spent = budget = 0
        for cid in live.ids:
            balance = audit(live.client, cid, expect_open=False).balance  # every invariant, exactly
            assert balance is not None and balance.spent <= balance.budget
            spent, budget = spent + balance.spent, budget + balance.budget
    finally:
        fleet.close()
    short = [e.tick for e in after if e.missed or e.late or e.dropped]
    complete_from = next(
        e.tick for e in after if all(not (x.missed or x.late or x.dropped) for x in after if x.tick >= e.tick)
    )
    summarised = {e.tick for e in live.entries()}
    unrun = [t for t in range(last_before + 1, numbers[0]) if t not in summarised]
    print(
        f"\n{outage}: {OUTAGE_SECONDS:.0f} s; ended in tick {under_way}; not summarised: ticks "
        f"{unrun[0] if unrun else '-'}-{unrun[-1] if unrun else '-'} ({len(unrun)}), {stale:.0f} of them skipped as "
        f"stale; short after it: {short}; complete from tick {complete_from}, {complete_from - under_way} ticks "
        f"after the one under way when it ended ({time.time() - resumed:.0f} s to {len(after)} summaries); "
        f"{health.summary()}; books exact after the sweep, spent {spent / 1e6:,.2f} of {budget / 1e6:,.2f}, "
        "no campaign over budget"
    )


def cause(live: LiveFleet, outage: str) -> None:
    """One outage of ``OUTAGE_SECONDS``; returns once what was stopped runs again."""
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


def test_health_names_a_broker_that_is_down(redis_url: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from cli.redis_server import free_port
    from tests.test_api import LOCAL, LOOPBACK, TOKEN

    settings = Settings(redis_url=redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0", api_token=TOKEN)
    with TestClient(create_app(settings), client=LOOPBACK, base_url=LOCAL) as c:
        health = c.get("/health")
    body = health.json()
    assert health.status_code == 503 and body["redis"] is True and body["queue_depth"] is None
    assert any(reason.startswith("broker unreachable since") for reason in body["reasons"]), body
