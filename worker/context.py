"""The fleet context of one worker process, built lazily after the prefork fork."""

from __future__ import annotations

import os

from common.fleet.fleet import Fleet
from common.redis_conn import Client, connect
from common.settings import get_settings

_fleet: Fleet | None = None
_pid: int | None = None
_broker: Client | None = None
_broker_pid: int | None = None


def fleet() -> Fleet:
    """This process's ``Fleet``; rebuilt in a forked child so no Redis socket is shared."""
    global _fleet, _pid
    if _fleet is None or _pid != os.getpid():
        _fleet = Fleet.from_settings(get_settings())
        _pid = os.getpid()
    return _fleet


def broker() -> Client:
    """A client of the broker's Redis in this process: the fleet's own when they are one server."""
    global _broker, _broker_pid
    if _broker is None or _broker_pid != os.getpid():
        f = fleet()
        url = f.settings.broker
        _broker = f.r if url == f.settings.state_url else connect(url)
        _broker_pid = os.getpid()
    return _broker
