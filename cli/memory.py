"""``campaign-engine memory``: how Redis memory grows over a long backtest, to show that it does not.

Runs a generated scenario (every flight the whole scenario long) through the fleet's own path at
backtest speed, inline, with the upkeep the live fleet runs (``common.fleet.maintenance``), on a
private Redis, and reads ``used_memory`` and the key count at the ticks asked. The state is bounded
when the last figure stays close to the first: the target is at most 1.25 times the memory after
1,000 ticks at the end of a day of 2-second ticks (43,200).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cli.redis_server import RedisServer
from common.backtest.runner import InlineExecutor, prepare
from common.fleet import maintenance
from common.fleet.fleet import Fleet
from common.market.generator import generate
from common.settings import Settings


@dataclass(frozen=True)
class Sample:
    tick: int  # ticks run when measured
    used_memory: int  # bytes, INFO memory
    keys: int
    seconds: float


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
        fleet = Fleet.from_settings(settings.model_copy(update={"redis_url": server.url}), scenario=scenario)
        prepare(fleet, scenario)
        executor = InlineExecutor(fleet)
        started = time.perf_counter()
        for t in range(ticks):
            executor.run_tick(t)
            if t % maintenance.EVERY_TICKS == maintenance.EVERY_TICKS - 1:
                maintenance.run(fleet, t)
            if t + 1 in wanted:
                memory = int(fleet.r.info("memory")["used_memory"])
                sample = Sample(t + 1, memory, int(fleet.r.dbsize()), time.perf_counter() - started)  # type: ignore[arg-type]
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample)
        fleet.r.close()
    return samples
