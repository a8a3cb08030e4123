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

The figures come from the evaluations: each group writes its campaigns' remaining budget (after
their settles) and flight end to ``ce:campaigns:stakes`` in the round trip that records it, and the
tick reads the whole hash in one command. Reading each due campaign's balance and flight end instead
(two commands per campaign) was a third of the Redis commands of a tick at every fleet size; at
20,000 campaigns it alone took the tick task past 150 ms. A remaining budget as of the campaign's
last evaluation misses only what changed it since (an operator's adjustment, the sweeper): the order
catches up at its next evaluation. A due campaign never evaluated (new, resumed, or the hash lost) is
read from the ledger as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common import keys
from common.fleet.fleet import Fleet
from common.ledger import Balance, queue_balance

# Fields deleted per HDEL, so that a large clean-up is not one huge command.
_HDEL_BATCH = 1_000


def stake(remaining_micros: int, end_tick: int | None, tick: int) -> float:
    """Remaining budget per remaining tick of the flight; a flight without an end spreads it over one."""
    ticks_left = 1 if end_tick is None else max(1, end_tick - tick)
    return remaining_micros / ticks_left


def queue_record(pipe: Any, figures: Mapping[str, tuple[int, int | None]]) -> None:
    """Queue storing each campaign's (remaining micros, end tick) as its evaluation leaves them."""
    if figures:
        fields = {cid: f"{remaining} {'' if end is None else end}" for cid, (remaining, end) in figures.items()}
        pipe.hset(keys.STAKES, mapping=fields)


def by_stake(fleet: Fleet, campaign_ids: Sequence[str], tick: int) -> list[str]:
    """``campaign_ids`` with the most spend at stake first, ties in id order.

    Fields of campaigns not in ``campaign_ids`` (no longer due) are deleted on the way.
    """
    stored: dict[str, str] = fleet.r.hgetall(keys.STAKES)  # type: ignore[assignment]
    stakes: dict[str, float] = {}
    missing = []
    for cid in campaign_ids:
        figures = stored.pop(cid, None)
        parsed = _parse(figures) if figures is not None else None
        if parsed is None:
            missing.append(cid)
        else:
            stakes[cid] = stake(parsed[0], parsed[1], tick)
    pipe = fleet.r.pipeline(transaction=False)
    gone = list(stored)  # what is left of the hash: campaigns not due
    deletes = [gone[i : i + _HDEL_BATCH] for i in range(0, len(gone), _HDEL_BATCH)]
    for fields in deletes:
        pipe.hdel(keys.STAKES, *fields)
    for cid in missing:
        queue_balance(pipe, cid)
        pipe.hget(keys.campaign(cid), "end_tick")
    replies = pipe.execute()[len(deletes) :]
    for i, cid in enumerate(missing):
        balance = Balance.from_row(replies[2 * i])
        end = replies[2 * i + 1]
        remaining = 0 if balance is None else balance.remaining
        stakes[cid] = stake(remaining, int(end) if end else None, tick)
    return sorted(campaign_ids, key=lambda cid: (-stakes[cid], cid))


def _parse(figures: str) -> tuple[int, int | None] | None:
    """``"<remaining> <end>"`` as written by ``queue_record``; None for anything else (then read afresh)."""
    remaining, _, end = figures.partition(" ")
    try:
        return int(remaining), int(end) if end else None
    except ValueError:
        return None
