"""A Celery schedule that fires on whole multiples of the tick length.

Celery's plain interval schedule counts from the last run and drifts; aligning every beat to the
same wall-clock grid makes tick numbers unambiguous, and two beats started by mistake fire for the
same tick (the tick's ``SET NX`` claim then lets only one of them run it).

The grid is the fleet's time (``common/fleet/clock.py``: Redis time, measured once in a while), not
the beat machine's clock: a beat on a machine whose clock is off still fires at the fleet's tick
boundaries and names the tick the workers agree on. While Redis cannot be reached, the last measured
offset stands.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from celery.schedules import schedstate, schedule

from common.fleet.clock import Clock
from common.redis_conn import connect
from common.settings import get_settings


class AlignedInterval(schedule):  # type: ignore[misc]
    def __init__(self, seconds: float, **kwargs: Any) -> None:
        super().__init__(run_every=timedelta(seconds=seconds), **kwargs)
        self.period = seconds

    def is_due(self, last_run_at: datetime) -> schedstate:
        # ``nowfun``, which Celery's schedules take, sets the clock in tests.
        now = self.nowfun().timestamp() if self.nowfun else time.time()
        slot = _slot(now, self.period)
        last_slot = _slot(last_run_at.timestamp(), self.period)
        next_in = max(0.001, (slot + 1) * self.period - now)
        return schedstate(is_due=slot > last_slot, next=next_in)

    def __repr__(self) -> str:
        return f"<aligned every {self.period}s>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.period,)


def slot_start(seconds: float, now: float | None = None) -> float:
    """Unix time of the tick boundary beat fires for: the start of the slot ``now`` is in.

    Sent with the tick so that the number is beat's, not the clock of whichever worker picks the
    message up (a worker a few milliseconds behind would otherwise run the previous tick). A beat
    that fires late, even by most of a tick, fires for the slot it is in: rounding to the nearest
    boundary would number the next tick and skip one.
    """
    return _slot(time.time() if now is None else now, seconds) * seconds


def _slot(now: float, seconds: float) -> int:
    # The slack absorbs float noise at a boundary (0.3 / 0.1 is 2.9999999999999996).
    return math.floor(now / seconds + 1e-6)


@cache
def fleet_clock() -> Clock:
    """This beat process's view of the fleet's time."""
    settings = get_settings()
    return Clock(connect(settings.state_url), settings.tick_seconds)


def fleet_now() -> datetime:
    """The fleet's time as Celery's schedules take it (``nowfun``)."""
    return datetime.fromtimestamp(fleet_clock().now(), tz=UTC)


def fleet_slot_start(seconds: float) -> float:
    """``slot_start`` by the fleet's time: sent with each tick as ``scheduled_at``."""
    return slot_start(seconds, fleet_clock().now())
