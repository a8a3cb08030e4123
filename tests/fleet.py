"""Helpers to run a real Celery worker and beat against the test Redis."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from cli.processes import Child, ProcessGroup
from common import keys
from common.fleet.store import CampaignStore
from common.market.generator import generate
from common.models import PlatformInfo


def fleet_env(redis_url: str, run_dir: Path, scenario: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CE_REDIS_URL=redis_url, CE_SCENARIO=str(scenario), CE_RUN_DIR=str(run_dir), CE_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1", **extra,
    )  # fmt: skip
    return env


def write_market(path: Path, campaigns: int = 0, ticks: int = 400, seed: int = 3) -> Path:
    generate(campaigns=campaigns, platforms=4, ticks=ticks, seed=seed, late_flights=0.0).save(path)
    return path


def load_campaigns(client: redis.Redis, scenario_path: Path, campaigns: int, seed: int = 4) -> list[str]:
    from common.market.scenario import Scenario

    market = Scenario.load(scenario_path)
    store = CampaignStore(client)
    store.register_platforms(PlatformInfo(id=p.id, price_sigma=p.price_sigma) for p in market.platforms.values())
    demo = generate(campaigns=campaigns, platforms=len(market.platforms), ticks=market.ticks, seed=seed,
                    late_flights=0.0)  # fmt: skip
    for spec in demo.campaigns:
        store.create(spec)
    return [c.id for c in demo.campaigns]


@contextmanager
def running(env: dict[str, str], log_dir: Path, *, beats: int = 1, concurrency: int = 4) -> Iterator[ProcessGroup]:
    group = ProcessGroup(log_dir)
    try:
        group.spawn(
            "worker",
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-l", "info", "-c", str(concurrency),
             "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@%h", "-Q", "ticks,evaluations,maintenance"],
            env,
        )  # fmt: skip
        for i in range(beats):
            group.spawn(
                f"beat{i}",
                [sys.executable, "-m", "celery", "-A", "beat", "beat", "-l", "info",
                 "-s", str(log_dir / f"beat{i}-schedule")],
                env,
            )  # fmt: skip
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
