"""``campaign-engine memory``: how Redis memory grows over a long backtest, to show that it does not.

Runs a generated scenario (every flight the whole scenario long) through the fleet's own path at
backtest speed, inline, with the upkeep the live fleet runs (``common.fleet.maintenance``), on a
private Redis, and reads ``used_memory`` and the key count at the ticks asked, with ``MEMORY USAGE``
summed per part (the campaigns' keys, decisions, per-tick keys, the feed's volume ring, allocated
whole when created, and the tick summaries, capped by ``CE_TICK_STATS_RETENTION_TICKS``). The state is bounded when the
last figure stays close to the first: the target is at most 1.25 times the memory after 1,000
ticks at the end of a day of 2-second ticks (43,200).
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cli.redis_server import RedisServer
from cli.up import simulated
from common import keys
from common.backtest.runner import InlineExecutor, prepare
from common.fleet import maintenance
from common.fleet.fleet import Fleet
from common.market.generator import generate
from common.redis_conn import Client
from common.settings import Settings


@dataclass(frozen=True)
class Sample:
    tick: int  # ticks run when measured
    used_memory: int  # bytes, INFO memory
    keys: int
    seconds: float
    parts: dict[str, int]  # MEMORY USAGE summed per kind of key (``part``)


def part(key: str) -> str:
    """What a key belongs to, for the breakdown: the campaigns' own state, or one of the fleet's."""
    if key.startswith("{c:"):
        return "campaigns"
    if key.endswith(":volume"):
        return "feed volume history"  # volumes for the cycle fit: 100,000 slots of 16 B per platform
    if key == keys.TICK_STATS:
        return "tick summaries"  # one entry per tick, CE_TICK_STATS_RETENTION_TICKS of them
    if key == keys.DECISIONS:
        return "decisions"
    if key.startswith(f"{keys.PREFIX}:forecast:") or key.startswith(f"{keys.PREFIX}:tick:"):
        return "per-tick keys"
    return "other"


def breakdown(client: Client) -> dict[str, int]:
    parts: Counter[str] = Counter()
    for key in client.scan_iter(count=10_000):
        parts[part(key)] += int(client.memory_usage(key) or 0)  # type: ignore[arg-type]
    return dict(sorted(parts.items()))


def measure(
    settings: Settings,
    campaigns: int,
    ticks: int,
    at: Sequence[int],
    *,
    seed: int = 7,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Run ``ticks`` ticks of ``campaigns`` campaigns; a sample after each tick count in ``at``."""
    scenario = generate(campaigns, 4, ticks, seed, late_flights=0.0, name=f"memory-{campaigns}x{ticks}")
    wanted = set(at) | {ticks}
    samples = []
    with (
        tempfile.TemporaryDirectory(prefix="ce-memory-") as directory,
        RedisServer(Path(directory), appendonly=False) as server,
    ):
        fleet = Fleet.from_settings(simulated(settings).model_copy(update={"redis_url": server.url}), scenario=scenario)
        prepare(fleet, scenario)
        executor = InlineExecutor(fleet)
        started = time.perf_counter()
        for t in range(ticks):
            executor.run_tick(t)
            if t % maintenance.EVERY_TICKS == maintenance.EVERY_TICKS - 1:
                maintenance.run(fleet, t)
            if t + 1 in wanted:
                memory = int(fleet.r.info("memory")["used_memory"])
                took = time.perf_counter() - started
                sample = Sample(t + 1, memory, int(fleet.r.dbsize()), took, breakdown(fleet.r))  # type: ignore[arg-type]
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
        fleet.r.close()
    return samples
