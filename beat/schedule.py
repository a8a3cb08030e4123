"""A Celery schedule that fires on whole multiples of the tick length.

Celery's plain interval schedule counts from the last run and drifts; aligning every beat to the
same wall-clock grid makes tick numbers unambiguous, and two beats started by mistake fire for the
same tick (the tick's ``SET NX`` claim then lets only one of them run it).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

from celery.schedules import schedstate, schedule


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
