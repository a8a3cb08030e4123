"""``campaign-engine bench``: the real fleet at several campaign counts, then its two ceilings.

One embedded Redis with ``up``'s persistence, and ``up``'s embedded broker beside it, serve the whole
run. For each count both are flushed, the demo campaigns are loaded, and a fresh Celery worker and
beat run until ``ticks`` tick summaries exist; the first ``WARMUP_TICKS`` are left out. CPU is read
around the measured ticks (Redis's is both servers'): from the summary of the last warm-up tick
(written as the first measured tick begins) to the summary of the last measured one (written as the
tick after it begins). Flower and the API do not run: Flower
switches on task events, which cost the fleet a quarter of its throughput. After the last count
the ceilings are measured on the same Redis and campaigns: the no-op tasks on that count's worker
with beat stopped, then the bare loop with the worker stopped.

With ``cluster`` the campaign state lives on an embedded three-node Redis Cluster and Celery's
broker on a separate embedded Redis, every one of them with the same persistence; Redis CPU is then
the cluster's nodes together, and the broker's apart.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.progress import Progress, TaskID

from cli.bench.ceilings import Ceiling, bare_loop, noop_rate
from cli.bench.measure import (
    TreeSnapshot,
    redis_cpu,
    redis_cpu_by_node,
    redis_memory,
    rss_mb,
    tree_delta,
    tree_snapshot,
)
from cli.bench.report import WARMUP_TICKS, BenchResult, CountResult, CpuSeconds
from cli.processes import Child, ProcessGroup
from cli.redis_cluster import LocalCluster
from cli.redis_server import RedisServer
from cli.up import (
    EMBEDDED_FSYNC,
    celery_argv,
    child_env,
    demo_group_size,
    embedded_broker,
    load_demo,
    simulated,
    worker_argv,
)
from common import keys
from common.fleet.fleet import DEFAULT_MARKET_TICKS, Fleet
from common.fleet.stats import TickStats
from common.market.generator import generate
from common.market.scenario import Scenario
from common.redis_conn import Client, connect
from common.settings import Settings
from worker.app import EVALUATION_QUEUE, create_app

# Ticks between the fleet's last tick and the bare loop's first, so that none of their keys meet.
BARE_TICK_GAP = 100
LOG_LEVEL = "warning"


class BenchFailed(RuntimeError):
    """A process of the fleet died or the ticks did not come; the message names its log."""


@dataclass(frozen=True)
class Plan:
    counts: list[int]
    ticks: int
    campaigns_per_task: int | None
    concurrency: int
    noop_tasks: int = 5000
    bare_seconds: float = 5.0
    cluster: bool = False


@dataclass(frozen=True)
class _Snapshot:
    at: float
    redis: dict[str, float]
    broker: float
    worker: TreeSnapshot
    beat: TreeSnapshot


class Bench:
    def __init__(self, settings: Settings, plan: Plan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.run_dir = settings.run_dir.resolve() / "bench"
        shutil.rmtree(self.run_dir, ignore_errors=True)  # a previous run's AOF would only slow the start
        self.run_dir.mkdir(parents=True)
        self.market_path = self.run_dir / "demo-market.json"
        generate(campaigns=0, platforms=4, ticks=DEFAULT_MARKET_TICKS, seed=settings.market_seed).save(self.market_path)
        self.market = Scenario.load(self.market_path)
        self.settings = simulated(settings)

    def run(self) -> BenchResult:
        with ExitStack() as servers:
            self.settings = self.settings.model_copy(update={**self._start(servers), "scenario": self.market_path})
            self.client = connect(self.settings.state_url)
            # The broker apart from the state store: its queues are read, and its CPU measured, there.
            self.broker: Client | None = connect(self.settings.broker_url) if self.settings.broker_url else None
            self.app = create_app(self.settings)
            try:
                results = [self._count(count)[0] for count in self.plan.counts[:-1]]
                last, noop = self._count(self.plan.counts[-1], ceiling=True)
                assert noop is not None
                results.append(last)
                bare = self._bare_loop()
                machine = _machine(str(self.client.info("server")["redis_version"]))
            finally:
                self.app.close()
                self.client.close()
                if self.broker is not None:
                    self.broker.close()
        setup = {
            "counts": self.plan.counts, "ticks": self.plan.ticks, "warmup_ticks": WARMUP_TICKS,
            "tick_seconds": self.settings.tick_seconds, "concurrency": self.plan.concurrency,
            "appendfsync": EMBEDDED_FSYNC, "noop_tasks": self.plan.noop_tasks,
            "bare_loop_seconds": self.plan.bare_seconds,
            "state_store": "3-node Redis Cluster" if self.plan.cluster else "one Redis server",
            "broker": "a separate embedded Redis, no AOF",
        }  # fmt: skip
        return BenchResult(machine, setup, results, noop, bare)

    def _start(self, servers: ExitStack) -> dict[str, str]:
        """Start the embedded Redis servers; the settings that point at them."""
        broker = servers.enter_context(embedded_broker(self.run_dir / "broker"))
        if self.plan.cluster:
            state_url = servers.enter_context(LocalCluster(self.run_dir / "cluster", appendfsync=EMBEDDED_FSYNC)).url
        else:
            server = RedisServer(self.run_dir / "redis", appendonly=True, appendfsync=EMBEDDED_FSYNC)
            state_url = servers.enter_context(server).url
        return {"redis_url": state_url, "broker_url": broker.url}

    def _count(self, count: int, *, ceiling: bool = False) -> tuple[CountResult, Ceiling | None]:
        """The fleet at ``count`` campaigns; with ``ceiling``, the no-op tasks on its worker afterwards."""
        task = self.progress.add_task(f"{count:,} campaigns", total=self.plan.ticks)
        workers = ProcessGroup(self.run_dir / "logs" / str(count))
        beats = ProcessGroup(self.run_dir / "logs" / str(count))
        try:
            result = self._fleet_run(count, workers, beats, task)
            beats.stop_all()
            if not ceiling:
                return result, None
            self.progress.update(task, description="ceiling: Celery no-op tasks")
            self._drain(workers)
            return result, noop_rate(self.app, self.client, self.plan.noop_tasks, broker=self.broker)
        finally:
            beats.stop_all()
            workers.stop_all()
            self.progress.remove_task(task)

    def _fleet_run(self, count: int, workers: ProcessGroup, beats: ProcessGroup, task: TaskID) -> CountResult:
        client, plan = self.client, self.plan
        client.flushall()
        if self.broker is not None:
            self.broker.flushall()
        empty = redis_memory(client)
        load_demo(client, self.market, count, self.settings.market_seed + 1)
        per_campaign = (redis_memory(client) - empty) / count
        group = plan.campaigns_per_task or demo_group_size(self.settings, count)
        env = child_env(self.settings, self.settings.state_url, self.market_path, self.settings.broker_url)
        env["CE_CAMPAIGNS_PER_TASK"] = str(group)
        worker = workers.spawn(
            "worker",
            worker_argv(f"ce-bench-{os.getpid()}@%h", plan.concurrency, LOG_LEVEL),
            env,
        )  # fmt: skip
        self._wait_for_worker(workers)
        schedule = str(beats.log_dir / "beat-schedule")
        beat = beats.spawn("beat", celery_argv("-A", "beat", "beat", "-l", LOG_LEVEL, "-s", schedule), env)
        seen: list[TickStats] = []
        before = None
        last_id = "0"
        deadline = time.monotonic() + (plan.ticks + 2) * self.settings.tick_seconds + 90
        while len(seen) < plan.ticks:
            _check([*workers.children, *beats.children], deadline, count)
            replies: list[tuple[str, list[tuple[str, dict[str, str]]]]] = client.xread(  # type: ignore[assignment]
                {keys.TICK_STATS: last_id}, count=1, block=200
            )
            for _stream, entries in replies or []:
                for entry_id, raw in entries:
                    last_id = entry_id
                    seen.append(TickStats.from_fields(raw))
                    self.progress.advance(task)
                    if len(seen) == WARMUP_TICKS:
                        before = self._snapshot(worker, beat)
        after = self._snapshot(worker, beat)
        assert before is not None, "plans have more ticks than the warm-up"
        worker_main, worker_pool = tree_delta(before.worker, after.worker)
        beat_cpu = sum(tree_delta(before.beat, after.beat))
        by_node = {name: after.redis[name] - before.redis.get(name, 0.0) for name in after.redis}
        cpu = CpuSeconds(sum(by_node.values()), worker_main, worker_pool, beat_cpu, after.broker - before.broker)
        rss = rss_mb(worker.process.pid, descendants=True)
        return CountResult(
            count, group, after.at - before.at, seen[WARMUP_TICKS:], cpu, rss, per_campaign, redis_cpu_s_by_node=by_node
        )

    def _snapshot(self, worker: Child, beat: Child) -> _Snapshot:
        return _Snapshot(
            time.monotonic(),
            redis_cpu_by_node(self.client),
            0.0 if self.broker is None else redis_cpu(self.broker),
            tree_snapshot(worker.process.pid),
            tree_snapshot(beat.process.pid),
        )

    def _wait_for_worker(self, workers: ProcessGroup, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.app.control.ping(timeout=0.5):
            _check(workers.children, deadline, 0)

    def _drain(self, workers: ProcessGroup, timeout: float = 60.0) -> None:
        """Wait until the last tick's evaluations have left the queue and run."""
        deadline = time.monotonic() + timeout
        while (self.broker or self.client).llen(EVALUATION_QUEUE):
            _check(workers.children, deadline, 0)
            time.sleep(0.05)
        time.sleep(max(1.0, self.settings.tick_seconds))

    def _bare_loop(self) -> Ceiling:
        fleet = Fleet.from_settings(self.settings, self.market)
        try:
            first = int(self.client.get(keys.LAST_TICK) or 0) + BARE_TICK_GAP
            return bare_loop(fleet, sorted(fleet.store.ids()), first, self.plan.bare_seconds)
        finally:
            fleet.close()


def _check(children: list[Child], deadline: float, count: int) -> None:
    dead = [c for c in children if not c.alive]
    if dead:
        raise BenchFailed(f"{dead[0].name} stopped unexpectedly; see {dead[0].log_path}")
    if time.monotonic() > deadline:
        at = f" at {count:,} campaigns" if count else ""
        logs = ", ".join(str(c.log_path) for c in children)
        raise BenchFailed(f"the fleet did not answer in time{at}; see {logs}")


def _machine(redis_version: str) -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "system": platform.platform(),
        "python": platform.python_version(),
        "redis": redis_version,
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
