"""The fleet a chaos run tortures: two Redis servers, workers on two hosts, beat, all as processes.

- the state Redis with ``appendfsync always`` (as ``campaign-engine up`` embeds it), restarted by the
  driver from its AOF; the broker on a second Redis without persistence, as ``up`` runs it;
- workers on this host, and one in a network namespace (``cli/chaos/netns.py``) that reaches both
  servers over a veth pair, as another machine would; without a namespace all run here;
- one beat, and a second one while the driver runs two.

Every worker's simulated platforms log what they charged (``CE_PLATFORM_CHARGE_LOG``) under
``<run dir>/charges/<worker>/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from cli.chaos.netns import Host
from cli.processes import Child, ProcessGroup
from cli.redis_server import RedisServer
from cli.up import EMBEDDED_FSYNC, celery_argv, worker_argv


@dataclass
class Worker:
    name: str
    concurrency: int
    host: Host | None  # None: this host
    child: Child | None = None
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.child.process.pid if self.child is not None else None

    def pool(self) -> list[int]:
        """Pids of the pool processes the worker's main process forked."""
        if self.pid is None:
            return []
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]


@dataclass
class ChaosFleet:
    run_dir: Path
    tick_seconds: float
    scenario: Path
    campaigns_per_task: int
    platform_reply_ms: int
    host: Host | None
    state: RedisServer = field(init=False)
    broker: RedisServer = field(init=False)
    group: ProcessGroup = field(init=False)
    workers: list[Worker] = field(default_factory=list)
    beats: list[Child] = field(default_factory=list)
    _beat_serial: int = 0

    def __post_init__(self) -> None:
        # Redis listens on loopback for this host's workers and on the veth's host side for the other host.
        extra = ("--protected-mode", "no") + (("--bind", "127.0.0.1", self.host.host_address) if self.host else ())
        self.state = RedisServer(self.run_dir / "redis", appendfsync=EMBEDDED_FSYNC, extra_args=extra)
        self.broker = RedisServer(self.run_dir / "broker", appendonly=False, extra_args=extra)
        self.group = ProcessGroup(self.run_dir / "logs")

    @property
    def charges_dir(self) -> Path:
        return self.run_dir / "charges"

    def start_servers(self) -> None:
        self.state.start()
        self.broker.start()

    def env(self, host: Host | None, charges: Path) -> dict[str, str]:
        address = host.host_address if host else "127.0.0.1"
        env = dict(os.environ)
        env.update(
            CE_REDIS_URL=f"redis://{address}:{self.state.port}/0",
            CE_BROKER_URL=f"redis://{address}:{self.broker.port}/0",
            CE_TICK_SECONDS=repr(self.tick_seconds), CE_SCENARIO=str(self.scenario.resolve()),
            CE_RUN_DIR=str(self.run_dir.resolve()), CE_CAMPAIGNS_PER_TASK=str(self.campaigns_per_task),
            CE_PLATFORM_CHARGE_LOG=str(charges.resolve()), CE_PLATFORM_REPLY_MS=str(self.platform_reply_ms),
            # Every reservation record kept (no compaction): the end checks reconcile each platform
            # charge with its record. Compaction under concurrency is the ledger hammer's to prove.
            CE_LEDGER_DETAIL_TICKS="1000000",
            # Every tick's summary kept: the report reads those of the whole run at its end.
            CE_TICK_STATS_RETENTION_TICKS="1000000",
            CE_FEED="simulated", CE_PLATFORM_ADAPTER="simulated", CE_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1",
        )  # fmt: skip
        return env

    def add_worker(self, name: str, concurrency: int, host: Host | None) -> Worker:
        worker = Worker(name, concurrency, host)
        self.workers.append(worker)
        self.start_worker(worker)
        return worker

    def start_worker(self, worker: Worker) -> None:
        argv = worker_argv(f"{worker.name}-{os.getpid()}@%h", worker.concurrency)
        if worker.host is not None:
            argv = worker.host.argv(argv)
        worker.child = self.group.spawn(
            f"worker-{worker.name}", argv, self.env(worker.host, self.charges_dir / worker.name)
        )

    def kill_worker(self, worker: Worker, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (main and pool); with SIGKILL, reap it."""
        child = worker.child
        if child is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, sig)
        if sig is signal.SIGKILL:
            child.process.wait()
            _reap_group(child.process.pid)
            self.group.children.remove(child)
            worker.child = None

    def restart_worker(self, worker: Worker) -> None:
        self.kill_worker(worker)
        worker.restarts += 1
        self.start_worker(worker)

    def start_beat(self) -> Child:
        self._beat_serial += 1
        n = self._beat_serial
        schedule = str(self.run_dir / f"beat{n}-schedule")
        argv = celery_argv("-A", "beat", "beat", "-l", "info", "-s", schedule)
        beat = self.group.spawn(f"beat{n}", argv, self.env(None, self.charges_dir / "beat"))
        self.beats.append(beat)
        return beat

    def stop_beat(self, beat: Child, timeout: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(beat.process.pid, signal.SIGTERM)
        try:
            beat.process.wait(timeout)
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(beat.process.pid, signal.SIGKILL)
            beat.process.wait()
        self.beats.remove(beat)
        self.group.children.remove(beat)

    def resume_all(self) -> None:
        """SIGCONT every worker, and heal the namespace's link: nothing left stopped or cut off."""
        for w in self.workers:
            if w.child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.child.process.pid, signal.SIGCONT)
        if self.host is not None:
            self.host.heal()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.resume_all()
        self.group.stop_all()
        self.broker.stop()
        self.state.stop()


def _reap_group(pgid: int, timeout: float = 1.0) -> None:
    """Wait until no process of the group is left (SIGKILLed pool processes go with their parent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
