"""The Celery executor of backtests: the tick and evaluation tasks run on real workers."""

from __future__ import annotations

import time
from dataclasses import dataclass

from celery import Celery

from common import keys
from common.errors import BacktestError
from common.fleet.fleet import Fleet
from common.redis_conn import store_call
from worker.app import TICK_QUEUE

DONE_FIELDS = ("evaluated", "skipped", "duplicates", "late", "dropped")


@dataclass
class CeleryExecutor:
    """Sends ``ce.tick`` for each tick (not live: no deadline) and waits for its evaluations."""

    app: Celery
    fleet: Fleet
    timeout: float = 120.0

    def run_tick(self, tick: int) -> None:
        self.app.send_task("ce.tick", kwargs={"number": tick, "live": False}, queue=TICK_QUEUE)
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while not self._finished(tick):
            if time.monotonic() > deadline:
                raise BacktestError(f"tick {tick} did not finish within {self.timeout} s: are workers running?")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @store_call("read the tick's counters")
    def _finished(self, tick: int) -> bool:
        counters: dict[str, str] = self.fleet.r.hgetall(keys.tick_counters(tick))  # type: ignore[assignment]
        if "fanned" not in counters:
            return False
        return sum(int(counters.get(name, 0)) for name in DONE_FIELDS) >= int(counters["fanned"])
