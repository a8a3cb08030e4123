"""Helpers to run a real Celery worker and beat against the test Redis."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from cli.processes import Child, ProcessGroup
from cli.up import celery_argv, default_concurrency, load_demo, worker_argv, write_demo_market
from common import keys
from common.market.scenario import Scenario


def fleet_env(redis_url: str, run_dir: Path, scenario: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CE_REDIS_URL=redis_url, CE_SCENARIO=str(scenario), CE_RUN_DIR=str(run_dir), CE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1", **extra,
    )  # fmt: skip
    return env


def write_market(path: Path, ticks: int = 400, seed: int = 3) -> Path:
    """The demo market of ``campaign-engine up``, shorter."""
    return write_demo_market(path, seed, ticks)


def load_campaigns(client: redis.Redis, scenario_path: Path, campaigns: int, seed: int = 4) -> list[str]:
    """``up``'s demo campaigns on the market at ``scenario_path`` (its platforms registered); their ids."""
    created, _kept = load_demo(client, Scenario.load(scenario_path), campaigns, seed)
    return created


@contextmanager
def running(
    env: dict[str, str], log_dir: Path, *, beats: int = 1, concurrency: int | None = None
) -> Iterator[ProcessGroup]:
    """A worker as ``up`` starts it (its pool size unless ``concurrency``) and ``beats`` beats."""
    group = ProcessGroup(log_dir)
    try:
        name = f"test-{os.getpid()}-{time.monotonic_ns()}@%h"
        group.spawn("worker", worker_argv(name, concurrency or default_concurrency()), env)
        for i in range(beats):
            schedule = str(log_dir / f"beat{i}-schedule")
            group.spawn(f"beat{i}", celery_argv("-A", "beat", "beat", "-l", "info", "-s", schedule), env)
        yield group
    finally:
        group.stop_all()


def wait_for_ticks(client: redis.Redis, count: int, group: ProcessGroup, timeout: float) -> list[dict[str, str]]:
    """Tick summaries written so far, once at least ``count`` exist (or fail with the logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = group.dead()
        if dead:
            raise AssertionError(_logs(dead))
        entries = [e for _id, e in client.xrange(keys.TICK_STATS)]
        if len(entries) >= count:
            return entries
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} ticks in {timeout}s\n" + _logs(group.children))


def _logs(children: list[Child]) -> str:
    return "\n".join(f"--- {c.name}\n{c.log_path.read_text()[-3000:]}" for c in children)
