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
        now = time.time()
        slot = math.floor(now / self.period + 1e-6)
        last_slot = math.floor(last_run_at.timestamp() / self.period + 1e-6)
        next_in = max(0.001, (slot + 1) * self.period - now)
        return schedstate(is_due=slot > last_slot, next=next_in)

    def __repr__(self) -> str:
        return f"<aligned every {self.period}s>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.period,)


def slot_start(seconds: float) -> float:
    """Unix time of the tick boundary beat fires for: the nearest multiple of the tick length.

    Sent with the tick so that the number is beat's, not the clock of whichever worker picks the
    message up (a worker a few milliseconds behind would otherwise run the previous tick).
    """
    return round(time.time() / seconds) * seconds
