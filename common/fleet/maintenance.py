"""The fleet's upkeep between ticks: close what crashed evaluations left, compact old ledger history.

``run_now`` is what the ``ce.sweep`` task does every few ticks: ``run`` as of the fleet's current
tick. A backtest runs ``run`` as often, at the tick it has reached, so it keeps the same bounded
state as the live fleet:

- the sweeper closes reservations left unsettled past the grace (``common.ledger.sweeper``);
- compaction folds each campaign's ledger below ``tick - CE_LEDGER_DETAIL_TICKS`` into its totals
  (``common.ledger.compaction``): bounded work per campaign, the ticks since the last run;
- finished campaigns past ``CE_ARCHIVE_AFTER_TICKS`` are archived and removed (``archive.py``).

Neither changes what any campaign may spend: a backtest's decisions are the same with or without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common import keys
from common.errors import NotFound
from common.fleet import archive
from common.fleet.fleet import Fleet
from common.ledger import Balance, Compacted, compaction
from common.ledger.sweeper import sweep_all
from common.redis_conn import store_call

log = logging.getLogger(__name__)

# Ticks between two runs: the beat schedules ce.sweep this often, and a backtest runs it as often.
EVERY_TICKS = 5
PAGE = 500


@dataclass(frozen=True)
class Upkeep:
    swept: int
    compacted: Compacted
    archived: int = 0


@store_call("maintain the ledger")
def run(fleet: Fleet, tick: int) -> Upkeep:
    """Sweep and compact every campaign as of ``tick``."""
    swept = sweep_all(fleet.ledger, tick, fleet.settings.reservation_grace_ticks)
    compacted = compact_all(fleet, tick - fleet.settings.ledger_detail_ticks)
    if compacted.records or compacted.entries:
        log.info(
            "tick %d: compacted %d reservation records and %d ledger entries",
            tick, compacted.records, compacted.entries, extra={"tick": tick},
        )  # fmt: skip
    return Upkeep(swept, compacted, archive_finished(fleet, tick))


def run_now(fleet: Fleet) -> Upkeep:
    """``run`` as of the tick under way by the fleet's time (Redis time, ``common/fleet/clock.py``).

    Never this machine's clock alone: a machine whose clock runs ahead would otherwise sweep
    reservations whose evaluations are still under way, and charge the submitted ones in full.
    """
    return run(fleet, fleet.clock.current_tick())


def archive_finished(fleet: Fleet, tick: int) -> int:
    """Archive and remove the finished campaigns whose retention is over; returns how many."""
    done = 0
    for cid in archive.due(fleet.r, tick, fleet.settings.archive_after_ticks):
        if fleet.ledger.balances([cid]).get(cid, Balance(0, 0, 0, 0)).reserved:
            continue  # the sweeper closes its reservations first
        try:
            fleet.store.delete(cid, status="finished", archive_maxlen=fleet.settings.archive_maxlen)
        except NotFound:
            fleet.r.zrem(keys.ENDED, cid)
            continue
        done += 1
    return done


def compact_all(fleet: Fleet, upto: int) -> Compacted:
    """One compaction step for every campaign, up to tick ``upto``, a page of campaigns per round trip."""
    if upto < 0:
        return Compacted()
    total = Compacted()
    page: list[str] = []
    for cid in fleet.r.sscan_iter(keys.CAMPAIGNS, count=PAGE):
        page.append(cid)
        if len(page) == PAGE:
            total += compaction.compact(fleet.ledger, page, upto)
            page = []
    if page:
        total += compaction.compact(fleet.ledger, page, upto)
    return total
