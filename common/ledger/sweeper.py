"""The sweeper: releases reservations left open past their tick, so that their budget can be spent again.

A worker that dies between reserve and settle leaves its reservation open. A reservation of tick t
may still be settled until tick t + grace (a tick's costs are known only after it ends); at tick T
the sweeper releases every reservation still open with t < T - grace. Racing a late settle is safe:
each is one script, and whichever runs second sees the first one's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import redis
from redis.exceptions import RedisClusterException

from common import keys
from common.errors import StoreUnavailable
from common.ledger.ledger import Ledger

log = logging.getLogger(__name__)


def cutoff(current_tick: int, grace_ticks: int) -> int:
    """Reservations of ticks below this are due for release at ``current_tick``."""
    return max(0, current_tick - grace_ticks)


def sweep_all(ledger: Ledger, current_tick: int, grace_ticks: int, *, batch: int = 500) -> int:
    """Release every due reservation of every campaign in ``ce:campaigns``; returns how many."""
    before = cutoff(current_tick, grace_ticks)
    if before == 0:
        return 0
    released = 0
    try:
        for group in _chunks(ledger.client.sscan_iter(keys.CAMPAIGNS, count=batch), batch):
            released += ledger.sweep(group, before)
    except (redis.RedisError, RedisClusterException) as exc:
        raise StoreUnavailable(f"sweep: Redis is unavailable or failed ({exc})") from exc
    log.info("sweep of tick %d released %d reservations", current_tick, released, extra={"tick": current_tick})
    return released


def _chunks(items: Iterable[str | bytes], size: int) -> Iterator[list[str]]:
    group: list[str] = []
    for item in items:
        group.append(item.decode() if isinstance(item, bytes) else item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
