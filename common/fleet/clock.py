"""Tick numbers from wall time.

Tick 0 starts at the fleet's epoch, stored once in Redis (``SET NX``), so that every process, and
two beats started by mistake, agree on the number of the tick under way. Beat fires on multiples
of ``tick_seconds`` since the epoch (see ``beat.schedule``), so the tick task wakes just after
the tick it runs began.
"""

from __future__ import annotations

import math
import time

from common import keys
from common.errors import SettingsError
from common.redis_conn import Client, store_call


class Clock:
    def __init__(self, client: Client, tick_seconds: float) -> None:
        self.r = client
        self.tick_seconds = tick_seconds
        self._epoch: float | None = None

    @store_call("read the clock")
    def epoch(self) -> float:
        """Unix time of tick 0; the first caller sets it, aligned down to a whole tick."""
        if self._epoch is None:
            proposed = self._proposed()
            self.r.hsetnx(keys.CLOCK, "epoch", repr(proposed))
            self.r.hsetnx(keys.CLOCK, "tick_seconds", repr(self.tick_seconds))
            stored: list[str] = self.r.hmget(keys.CLOCK, ["epoch", "tick_seconds"])  # type: ignore[assignment]
            if float(stored[1]) != self.tick_seconds:
                raise SettingsError(
                    f"CE_TICK_SECONDS: this fleet ticks every {stored[1]} s but this process was configured with "
                    f"{self.tick_seconds} s; set CE_TICK_SECONDS alike everywhere"
                )
            self._epoch = float(stored[0])
        return self._epoch

    @store_call("read the clock")
    def stored_epoch(self) -> float | None:
        """The epoch if the fleet's clock has started, without starting it."""
        if self._epoch is None:
            stored: str | None = self.r.hget(keys.CLOCK, "epoch")  # type: ignore[assignment]
            return None if stored is None else float(stored)
        return self._epoch

    def planned_epoch(self) -> float:
        """The epoch, or the one ``epoch()`` would set now, without setting it (to check input first)."""
        stored = self.stored_epoch()
        return self._proposed() if stored is None else stored

    def _proposed(self) -> float:
        return math.floor(time.time() / self.tick_seconds) * self.tick_seconds

    def tick_at(self, now: float) -> int:
        # A small slack absorbs a beat that fires a millisecond early.
        return max(0, math.floor((now - self.epoch()) / self.tick_seconds + 1e-3))

    def start_of(self, tick: int) -> float:
        return self.epoch() + tick * self.tick_seconds

    def deadline_of(self, tick: int) -> float:
        """Evaluations of ``tick`` must start before this moment, or they bid on stale data."""
        return self.start_of(tick + 1)
