"""The faults a chaos run injects, one function per kind.

Each runs to its end (sleeping through the outage it causes) and returns a ``Fault`` with its start
and end in wall time; the run measures recovery from the end. A fault strikes while bids are out
(``Injector.moment``) or just after a tick boundary, while the tick's evaluations run, so that it
finds work in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from cli.chaos.fleet import ChaosFleet, Worker
from common import keys
from common.fleet.clock import Clock

KINDS = (
    "kill_pool_process", "kill_worker", "restart_redis", "stop_worker", "two_beats", "duplicate_delivery",
    "cut_host",
)  # fmt: skip


@dataclass
class Fault:
    kind: str
    target: str
    start: float  # unix time
    end: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Injector:
    """What a fault needs: the fleet, a client of each Redis, a Celery app to send with, the clock."""

    fleet: ChaosFleet
    state: Any  # redis client of the state server
    broker: Any  # redis client of the broker
    app: Celery
    clock: Clock
    rng: random.Random
    _struck: set[str] = field(default_factory=set)

    def kinds(self) -> tuple[str, ...]:
        return KINDS if self.fleet.host is not None else tuple(k for k in KINDS if k != "cut_host")

    def inject(self, kind: str) -> Fault:
        run: Callable[[], Fault] = getattr(self, kind)
        return run()

    # --- timing ---------------------------------------------------------------------------------
    def into_next_tick(self, most: float = 0.15) -> int:
        """Sleep until just after the next tick boundary (up to ``most`` of a tick in); its number."""
        t = self.clock.tick_at(time.time()) + 1
        at = self.clock.start_of(t) + self.rng.uniform(0.01, most) * self.clock.tick_seconds
        time.sleep(max(0.0, at - time.time()))
        return t

    def ticks(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high) * self.clock.tick_seconds

    def moment(self, kind: str, worker: Worker | None) -> tuple[int | None, dict[str, Any]]:
        """Wait for the moment to strike: a pool process of ``worker`` (any, if None) with bids out.

        The first fault of each kind, and half of the later ones, wait until a platform has charged
        for a pool process and not yet answered (its charge log just grew, ``CE_PLATFORM_REPLY_MS``
        before the answer): the evaluation has submitted its reservation and will settle it if it
        lives. Returns that process's pid, or None when it struck just after a tick boundary instead.
        """
        first = kind not in self._struck
        self._struck.add(kind)
        if first or self.rng.random() < 0.5:
            pid = self._charging(worker)
            if pid is not None:
                return pid, {"struck": "bids out"}
        return None, {"struck": "tick start", "tick": self.into_next_tick()}

    def _charging(self, worker: Worker | None, timeout_ticks: float = 20) -> int | None:
        dirs = [self.fleet.charges_dir / w.name for w in ([worker] if worker else self.fleet.workers)]
        before = _sizes(dirs)
        end = time.monotonic() + timeout_ticks * self.clock.tick_seconds
        while time.monotonic() < end:
            for path, size in _sizes(dirs).items():
                if size > before.get(path, 0):
                    # charges-<host>-<pid>.jsonl
                    return int(path.rsplit("-", 1)[1].removesuffix(".jsonl"))
            time.sleep(0.0002)
        return None

    def unsettled(self) -> int:
        """Reservations open or submitted right now, over the fleet (what a fault left in flight)."""
        cids = sorted(self.state.smembers(keys.CAMPAIGNS))
        pipe = self.state.pipeline(transaction=False)
        for cid in cids:
            pipe.zcard(keys.reservations(cid))
        return sum(pipe.execute())

    def _worker(self, *, netns: bool | None = None) -> Worker:
        alive = [w for w in self.fleet.workers if w.child is not None]
        return self.rng.choice([w for w in alive if netns is None or (w.host is not None) == netns])

    # --- the faults -------------------------------------------------------------------------------
    def kill_pool_process(self) -> Fault:
        """SIGKILL one pool process; its main process forks a new one."""
        worker = self._worker()
        pid, detail = self.moment("kill_pool_process", worker)
        if pid is None:
            pool = worker.pool()
            if not pool:
                now = time.time()
                return Fault("kill_pool_process", worker.name, now, now, {"skipped": "no pool process found"})
            pid = self.rng.choice(pool)
        now = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        detail |= {"pid": pid, "unsettled": self.unsettled()}
        return Fault("kill_pool_process", worker.name, now, now, detail)

    def kill_worker(self) -> Fault:
        """SIGKILL a worker's main process and its pool; start it again a moment later."""
        worker = self._worker()
        _pid, detail = self.moment("kill_worker", worker)
        start = time.time()
        self.fleet.kill_worker(worker)
        detail["unsettled"] = self.unsettled()
        time.sleep(self.ticks(1, 4))
        worker.restarts += 1
        self.fleet.start_worker(worker)
        return Fault("kill_worker", worker.name, start, time.time(), detail)

    def restart_redis(self) -> Fault:
        """SIGKILL the state Redis (only its AOF survives) and start it again."""
        _pid, detail = self.moment("restart_redis", None)
        start = time.time()
        self.fleet.state.kill()
        time.sleep(self.ticks(0.5, 3))
        self.fleet.state.start()
        return Fault("restart_redis", "state", start, time.time(), detail)

    def stop_worker(self) -> Fault:
        """SIGSTOP a worker (main and pool) long enough for the sweeper to close what it held, then
        SIGCONT it: its late evaluations meet released or fully charged reservations."""
        worker = self._worker()
        _pid, detail = self.moment("stop_worker", worker)
        pgid = worker.pid
        assert pgid is not None
        start = time.time()
        os.killpg(pgid, signal.SIGSTOP)
        detail["unsettled"] = self.unsettled()
        # Past the grace and the next sweep (every 5 ticks), within Celery's soft time limit (5 s).
        time.sleep(min(4.5, self.ticks(10, 12)))
        os.killpg(pgid, signal.SIGCONT)
        return Fault("stop_worker", worker.name, start, time.time(), detail)

    def two_beats(self) -> Fault:
        """A second beat beside the first for a while: every tick must still run once."""
        start = time.time()
        beat = self.fleet.start_beat()
        time.sleep(self.ticks(12, 20))
        self.fleet.stop_beat(beat)
        return Fault("two_beats", beat.name, start, time.time(), {})

    def duplicate_delivery(self) -> Fault:
        """Deliver evaluations of the tick under way twice more.

        Copies of the evaluation messages the workers hold (the broker's ``unacked`` hash: delivered,
        not yet acknowledged) go back on the queue as kombu restores a message, and ``ce.evaluate``
        is sent twice more with the arguments of one campaign the fan-out sent.
        """
        tick = self.into_next_tick(0.05)
        start = time.time()
        copied = 0
        deadline = start + 0.5 * self.clock.tick_seconds
        while not copied and time.time() < deadline:
            for raw in self.broker.hvals("unacked"):
                payload, _exchange, routing_key = json.loads(raw)
                if payload.get("headers", {}).get("task") != "ce.evaluate":
                    continue
                payload["headers"]["redelivered"] = True
                payload["properties"]["delivery_info"]["redelivered"] = True
                self.broker.rpush(routing_key or "evaluations", json.dumps(payload))
                copied += 1
            time.sleep(0.005)
        due = sorted(self.state.smembers(keys.ACTIVE))
        sent = self.rng.sample(due, min(2, len(due)))
        deadline_s = self.clock.deadline_of(tick)
        for cid in sent:
            for _ in range(2):
                self.app.send_task("ce.evaluate", args=([cid], tick, deadline_s), queue="evaluations",
                                   expires=deadline_s - time.time())  # fmt: skip
        return Fault("duplicate_delivery", "evaluations", start, time.time(),
                     {"tick": tick, "copied_unacked": copied, "sent_twice": sent})  # fmt: skip

    def cut_host(self) -> Fault:
        """Cut the namespace host's link; its workers' Redis calls hang, the others carry on. What it
        held is swept; the link comes back after the sweeper had time to act.

        Striking with bids out, the host's workers are held (SIGSTOP) for the few milliseconds
        ``ip link`` takes, so that the cut lands between their bids and their settle.
        """
        host = self.fleet.host
        assert host is not None
        workers = [w for w in self.fleet.workers if w.host is host and w.child is not None]
        pid, detail = self.moment("cut_host", self.rng.choice(workers))
        start = time.time()
        if pid is not None:
            for w in workers:
                _signal_group(w, signal.SIGSTOP)
        host.cut()
        if pid is not None:
            for w in workers:
                _signal_group(w, signal.SIGCONT)
        detail["unsettled"] = self.unsettled()
        time.sleep(self.ticks(14, 20))
        host.heal()
        detail["workers"] = [w.name for w in workers]
        return Fault("cut_host", host.name, start, time.time(), detail)


def _sizes(dirs: list[Path]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(d):
                sizes[entry.path] = entry.stat().st_size
    return sizes


def _signal_group(worker: Worker, sig: signal.Signals) -> None:
    if worker.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, sig)
