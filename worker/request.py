"""Celery's expiry of an evaluation judged by the fleet's time, not the clock of the worker's machine.

An evaluation expires at its tick's deadline, a moment in the fleet's time (Redis time, measured by
each process: ``common/fleet/clock.py``). Celery drops a message whose ``expires`` has passed by
``datetime.now()`` of the worker that takes it (``Request.maybe_expire``, called as the message
arrives and again before it runs). On a worker whose machine clock runs 10 s fast, every evaluation
of the live tick looked expired and was dropped unrun (``tests/test_worker.py``: all of them, with
a 2 s tick); one running slow started evaluations after their deadline, which the evaluation then
skips as late by the fleet's time, at the cost of a task each. This request class makes the same
check by the fleet's time. A worker that cannot reach Redis keeps its last measured offset; one
that never could compares with its own clock, as Celery does.
"""

from __future__ import annotations

import logging
import os

from celery.worker.request import Request
from celery.worker.state import revoked as revoked_tasks

from common.fleet.clock import Clock
from common.redis_conn import connect
from common.settings import get_settings

log = logging.getLogger(__name__)

_clock: Clock | None = None
_pid: int | None = None


def fleet_clock() -> Clock:
    """This process's view of the fleet's time (the worker's main process, which checks expiry)."""
    global _clock, _pid
    if _clock is None or _pid != os.getpid():
        settings = get_settings()
        _clock = Clock(connect(settings.state_url), settings.tick_seconds)
        _pid = os.getpid()
    return _clock


class FleetRequest(Request):  # type: ignore[misc]
    def maybe_expire(self) -> bool | None:
        """Mark the task revoked when its ``expires`` has passed by the fleet's time."""
        if not self.expires:
            return None
        try:
            now = fleet_clock().now()
        except Exception:  # the clock cannot even be built (a cluster unreachable at start): Celery's own check
            log.warning("fleet clock unavailable; expiry of %s by this machine's clock", self.id, exc_info=True)
            result: bool | None = super().maybe_expire()
            return result
        if now > self.expires.timestamp():
            revoked_tasks.add(self.id)
            return True
        return None
