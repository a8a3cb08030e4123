"""Over capacity: the one definition, from the tick summaries (``TickStats``).

A tick is *short* when some campaign it fanned out was neither evaluated nor skipped on time
(``missed > 0``: late, dropped in the queue, or still unfinished at the summary). The fleet is *over
capacity* once ``OVER_CAPACITY_TICKS`` ticks running were short, and back under it at the first
complete tick. One short tick alone (a pause of the machine, a slow Redis moment) is not a state
worth paging for; two in a row is a load the fleet does not keep up with. Clearing at once, on the
first complete tick, means the signal lasts no longer than the shortfall.

The tick's claimant carries the run into each summary (``TickStats.short_run``), so that every reader
(``up``'s tick line, /health, the dashboard, the metrics) judges one entry alike, without history.
"""

from __future__ import annotations

from common.fleet.stats import TickStats

OVER_CAPACITY_TICKS = 2


def is_short(entry: TickStats) -> bool:
    """Some campaign of the tick was neither evaluated nor skipped on time."""
    return entry.missed > 0


def short_run(entry: TickStats, previous: TickStats | None) -> int:
    """Short ticks running up to ``entry``: the previous tick's run plus one, or 0 for a complete tick.

    ``previous`` is the summary of ``entry.tick - 1`` when there is one; any other (a tick nobody ran)
    starts the run afresh.
    """
    if not is_short(entry):
        return 0
    if previous is None or previous.tick != entry.tick - 1:
        return 1
    return previous.short_run + 1


def over_capacity(entry: TickStats) -> bool:
    return entry.short_run >= OVER_CAPACITY_TICKS


def evaluated_share(entry: TickStats) -> float:
    """Evaluated campaigns against those due (fanned out but not skipped): 1.0 for a tick with none due."""
    due = entry.fanned - entry.skipped
    return 1.0 if due <= 0 else min(1.0, entry.evaluated / due)


def describe(entry: TickStats) -> str:
    """``capacity ok``, or ``over capacity 62%`` with the share of due campaigns the tick evaluated."""
    if over_capacity(entry):
        return f"over capacity {evaluated_share(entry):.0%}"
    return "capacity ok"
