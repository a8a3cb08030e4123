"""The fleet context of one worker process, built lazily after the prefork fork."""

from __future__ import annotations

import os

from common.fleet.fleet import Fleet
from common.settings import get_settings

_fleet: Fleet | None = None
_pid: int | None = None


def fleet() -> Fleet:
    """This process's ``Fleet``; rebuilt in a forked child so no Redis socket is shared."""
    global _fleet, _pid
    if _fleet is None or _pid != os.getpid():
        _fleet = Fleet.from_settings(get_settings())
        _pid = os.getpid()
    return _fleet
