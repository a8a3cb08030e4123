"""The sweeper: closes reservations left unsettled past their tick.

A worker that dies between reserve and settle leaves its reservation unsettled. A reservation of
tick t may still be settled until tick t + grace (a tick's costs are known only after it ends); at
tick T the sweeper closes every reservation still unsettled with t < T - grace:

- an ``open`` one (never submitted, so no bid was placed against it) is released: its budget can be
  spent again;
- a ``submitted`` one (its bids went out, their cost never reached the ledger) is charged at its
  full grant: a platform may have spent up to each grant, so giving it back could spend it twice.

Racing a late submit or settle is safe: each is one script, and whichever runs second sees the
first one's outcome (a submit after the release is refused, so no bid is placed; a settle after the
full charge is a replay of it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from common import keys
from common.ledger.ledger import Ledger
from common.ledger.records import Swept
from common.redis_conn import translated_errors

log = logging.getLogger(__name__)


def cutoff(current_tick: int, grace_ticks: int) -> int:
    """Reservations of ticks below this are due for release at ``current_tick``."""
    return max(0, current_tick - grace_ticks)


def sweep_all(ledger: Ledger, current_tick: int, grace_ticks: int, *, batch: int = 500) -> int:
    """Close every due reservation of every campaign in ``ce:campaigns``; returns how many it closed.

    That is released (open) plus charged in full (submitted); both counts are logged.
    """
    before = cutoff(current_tick, grace_ticks)
    if before == 0:
        return 0
    total = Swept()
    with translated_errors("sweep"):
        for group in _chunks(ledger.client.sscan_iter(keys.CAMPAIGNS, count=batch), batch):
            total += ledger.sweep(group, before)
    log.log(
        logging.WARNING if total.charged else logging.INFO,
        "sweep of tick %d released %d reservations and charged %d submitted ones at their full grant",
        current_tick,
        total.released,
        total.charged,
        extra={"tick": current_tick, "released": total.released, "charged": total.charged},
    )
    return total.closed


def _chunks(items: Iterable[str | bytes], size: int) -> Iterator[list[str]]:
    group: list[str] = []
    for item in items:
        group.append(item.decode() if isinstance(item, bytes) else item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
