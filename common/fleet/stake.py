"""Which due campaigns go out first: the fan-out's order, by spend at stake.

When the fleet cannot evaluate every due campaign within its tick, the evaluations that expire are
the tail of the fan-out (Celery's Redis transport delivers a queue first in, first out, and an
evaluation past its tick's deadline is dropped unrun). So the order of the fan-out decides which
campaigns a short tick leaves out, and we make it on purpose: the most money at stake first.

A campaign's stake at tick t is what pacing has left to spend per tick of its flight,

    stake = remaining budget / (end_tick - t)        (micro-units per tick)

so a short tick costs the least spend it can. The order corrects itself: a campaign left out keeps
its budget while its flight shortens, so its stake grows until it goes out ahead of those that
spent. Ties (and campaigns without a balance, stake 0) go in id order, so the order is the same in
every process and every run.

The figures come from the ledger's balances and the flight's end kept beside each campaign, read in
one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

from common import keys
from common.fleet.fleet import Fleet
from common.ledger import Balance, queue_balance


def stake(remaining_micros: int, end_tick: int | None, tick: int) -> float:
    """Remaining budget per remaining tick of the flight; a flight without an end spreads it over one."""
    ticks_left = 1 if end_tick is None else max(1, end_tick - tick)
    return remaining_micros / ticks_left


def by_stake(fleet: Fleet, campaign_ids: Sequence[str], tick: int) -> list[str]:
    """``campaign_ids`` with the most spend at stake first, ties in id order."""
    pipe = fleet.r.pipeline(transaction=False)
    for cid in campaign_ids:
        queue_balance(pipe, cid)
        pipe.hget(keys.campaign(cid), "end_tick")
    replies = pipe.execute()
    stakes = {}
    for i, cid in enumerate(campaign_ids):
        balance = Balance.from_row(replies[2 * i])
        end = replies[2 * i + 1]
        remaining = 0 if balance is None else balance.remaining
        stakes[cid] = stake(remaining, int(end) if end else None, tick)
    return sorted(campaign_ids, key=lambda cid: (-stakes[cid], cid))
