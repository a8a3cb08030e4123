"""What Celery does with evaluations, on real workers: expiry in the queue, redelivery after a kill.

Each test runs with an evaluation sent alone (``send_task``) and as the tick task sends them, in one
batch (``worker/fanout.py``): the workers must not be able to tell them apart.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from cli.processes import ProcessGroup
from cli.redis_server import RedisServer
from cli.up import worker_argv
from common import keys
from common.fleet import decisions
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, write_market
from tests.ledger_helpers import audit
from worker.app import EVALUATION_QUEUE, create_app
from worker.fanout import publish_evaluations

pytestmark = pytest.mark.slow

SENDS = ("single", "batch")


def send(app: Celery, how: str, groups: list[list[str]], tick: int, expires: datetime | None = None) -> None:
    """Queue an evaluation of each group of campaigns: one ``send_task`` each, or the tick's batch."""
    if how == "single":
        for group in groups:
            app.send_task("ce.evaluate", args=(group, tick, None), queue=EVALUATION_QUEUE, expires=expires)
    else:
        app.loader.import_default_modules()  # the app's tasks, as a worker imports them at start
        publish_evaluations(app.tasks["ce.evaluate"], groups, tick, None, expires)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A broker apart from the fleet's Redis, so that pausing the fleet's writes leaves Celery running."""
    with RedisServer(tmp_path / "broker", appendonly=False) as server:
        yield server.url


def wait_until(what: str, done: Callable[[], Any], group: ProcessGroup, timeout: float = 60.0) -> Any:
    """Poll ``done`` until it is truthy; the timeout only stops a test that would otherwise hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert not group.dead(), f"a worker died: see {group.log_dir}"
        result = done()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s; see the logs in {group.log_dir}")


def online(app: Celery, group: ProcessGroup, count: int) -> None:
    wait_until(f"{count} workers answering", lambda: len(app.control.ping(timeout=0.5)) >= count, group)


@pytest.mark.parametrize("how", SENDS)
def test_an_evaluation_that_expires_in_the_queue_is_counted_as_dropped(
    r: redis.Redis, redis_url: str, tmp_path: Path, how: str
) -> None:
    market = write_market(tmp_path / "market.json")
    settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path)
    fleet = Fleet.from_settings(settings)
    ids = load_campaigns(r, market, 4)
    assert begin(fleet, 1) is not None
    app = create_app(settings)
    group = ProcessGroup(tmp_path / "logs")
    try:
        # Two evaluations sent while no worker runs; they reach the worker only after they expired.
        expires = datetime.now(UTC) + timedelta(seconds=0.5)
        send(app, how, [ids[:1], ids[1:]], 1, expires)
        while datetime.now(UTC) <= expires:
            time.sleep(0.05)
        group.spawn("worker", worker_argv(f"drop-{os.getpid()}@%h", 1), fleet_env(redis_url, tmp_path, market))
        counters = keys.tick_counters(1)
        dropped = lambda: int(r.hget(counters, "dropped") or 0) == len(ids)  # noqa: E731
        wait_until("both expired evaluations counted", dropped, group)
    finally:
        group.stop_all()
        app.close()
    assert r.hget(counters, "dropped") == str(len(ids)), "each campaign of each task is dropped"
    assert int(r.hget(counters, "evaluated") or 0) == 0
    assert r.xlen(keys.DECISIONS) == 0
    for cid in ids:
        assert not r.exists(keys.evaluated(cid, 1)), "the expired task never ran"
        balance = fleet.ledger.balance(cid)
        assert balance.reserved == balance.spent == 0 and balance.remaining == balance.budget


@pytest.mark.parametrize("how", SENDS)
def test_an_evaluation_killed_mid_task_is_redelivered_and_applied_once(
    r: redis.Redis, redis_url: str, broker: str, tmp_path: Path, how: str
) -> None:
    """SIGKILL the pool process running an evaluation: acks_late with reject_on_worker_lost puts the
    message back, another worker runs it, and the ledger holds each reservation once.

    The second worker starts only once Redis takes writes again: had it taken the message while the
    writes were paused, its own evaluation would wait there too, and might outlive its time limit."""
    market = write_market(tmp_path / "market.json")
    settings = Settings(redis_url=redis_url, broker_url=broker, scenario=market, run_dir=tmp_path)
    fleet = Fleet.from_settings(settings)
    ids = load_campaigns(r, market, 6)
    for t in range(1, 4):
        assert begin(fleet, t) is not None  # tick 3's forecasts are cached: the evaluation only reads them
    app = create_app(settings)
    env = fleet_env(redis_url, tmp_path, market, CE_BROKER_URL=broker)
    group = ProcessGroup(tmp_path / "logs")
    try:
        group.spawn("worker-a", worker_argv(f"a-{os.getpid()}@%h", 1), env)
        online(app, group, 1)
        # Writes to the fleet's Redis wait while paused: the evaluation stops at its first write,
        # before it has marked, reserved or charged anything, and is killed there.
        r.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            send(app, how, [ids], 3)
            active = wait_until("the evaluation running", lambda: _running(app), group)
            waiting = lambda: int(r.info("clients")["blocked_clients"])  # noqa: E731
            wait_until("the evaluation waiting on its first write", waiting, group)
            # The message the kill puts back must wait for the second worker, not return to this one.
            app.control.cancel_consumer(EVALUATION_QUEUE, destination=[active["hostname"]], reply=True)
            os.kill(active["worker_pid"], signal.SIGKILL)
            # Its connection must be gone before the pause ends, or Redis would run the write it holds.
            wait_until("the killed process's connection closed", lambda: waiting() == 0, group)
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        group.spawn("worker-b", worker_argv(f"b-{os.getpid()}@%h", 1), env)
        counters = keys.tick_counters(3)
        done = lambda: sum(int(r.hget(counters, n) or 0) for n in ("evaluated", "skipped", "duplicates"))  # noqa: E731
        wait_until("the redelivered evaluation", lambda: done() >= len(ids), group)
        time.sleep(0.5)  # nothing more arrives: a second delivery would count duplicates
    finally:
        group.stop_all()
        app.close()
    assert int(r.hget(counters, "duplicates") or 0) == 0, "the killed delivery marked nothing"
    assert int(r.hget(counters, "evaluated") or 0) + int(r.hget(counters, "skipped") or 0) == len(ids)
    bids = [d for _id, d in decisions.bids(decisions.parse(r.xrange(keys.DECISIONS)))]  # type: ignore[arg-type]
    assert bids, "the redelivered evaluation bid"
    spent = 0
    for cid in ids:
        books = audit(r, cid, expect_open=False)  # every ledger invariant, exactly
        moves = Counter((e["kind"], e["platform"]) for _id, e in r.xrange(keys.ledger(cid)) if e["tick"] == "3")
        assert all(n == 1 for n in moves.values()), f"{cid}: a movement of tick 3 twice: {moves}"
        spent += books.balance.spent
    # Charged once: what the decision stream says the bids cost, each rounded up to the micro-unit.
    cost = sum(d.cost for d in bids) * 1e6
    assert cost - 1 < spent < cost + len(bids)


def _running(app: Celery) -> dict[str, Any] | None:
    """The evaluation a worker process is executing now, as the worker reports it."""
    replies: dict[str, list[dict[str, Any]]] = app.control.inspect(timeout=0.5).active() or {}
    tasks = [t for ts in replies.values() for t in ts if t["name"] == "ce.evaluate"]
    return tasks[0] if tasks else None
