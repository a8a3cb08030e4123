"""Compaction: keep a campaign's ledger in detail for its recent ticks only, and its totals for the rest.

Every tick leaves a reservation record and a few stream entries per campaign. Kept for ever they
grow with the flight (about 0.8 KB per campaign and tick). Compaction (``lua/compact.lua``) raises a
per-campaign watermark to ``upto`` (at most ``MAX_SPAN`` ticks per call, and never past an unsettled
reservation), deletes the records at or below it, and folds the stream's entries of those ticks into
totals in ``{c:<id>}:history``. From then on reserve, submit and settle refuse a tick at or below
the watermark (``TickCompacted``): it was closed, so the call is a late repeat, and a late duplicate
can never reserve or charge again after its record is gone. The audit (``audit.py``) checks the
totals and the stream together, so it stays exact.

Each call is bounded (``MAX_SPAN`` records and ``MAX_ENTRIES`` entries per campaign) and
incremental: run it often with a moving ``upto`` (the sweeper does, every few ticks) and each run
does the work of the ticks since the last one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from common import keys
from common.ledger.ledger import Ledger, _campaign_id, _refusal, _text, _tick
from common.ledger.records import Compacted
from common.ledger.scripts import Call
from common.redis_conn import translated_errors

log = logging.getLogger(__name__)

# Records one call may delete per campaign, and stream entries it may fold: a call moves the
# watermark at most this far, a later call goes on.
MAX_SPAN = 256
MAX_ENTRIES = 2_048


def compact(ledger: Ledger, campaigns: Iterable[str], upto: int) -> Compacted:
    """Compact each campaign's ledger up to tick ``upto`` (inclusive), one bounded step each.

    Two round trips for all of them: the watermarks, then one script per campaign. A campaign whose
    watermark another compaction moved meanwhile is counted in ``moved`` and left for the next call.
    """
    upto = int(_tick(upto))
    ids = [_campaign_id(cid) for cid in campaigns]
    if not ids:
        return Compacted()
    with translated_errors("read watermarks"):
        pipe = ledger.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(keys.history(cid), ["watermark", "first"])
            pipe.hget(keys.campaign(cid), "start_tick")
            pipe.zrange(keys.reservations(cid), 0, 0, withscores=True)
        rows = pipe.execute()
    calls = []
    for i, cid in enumerate(ids):
        (mark, low), start, oldest = rows[3 * i : 3 * i + 3]
        first = _first_tick(mark, start, oldest, low)
        last = min(upto, first + MAX_SPAN - 1)
        if last < first:
            continue  # nothing new below upto
        calls.append((cid, _call(cid, first, upto)))
    replies = ledger._run_many([call for _, call in calls])
    total = Compacted()
    marks = ledger.client.pipeline(transaction=False)
    for (cid, call), reply in zip(calls, replies, strict=True):
        refusal = _refusal(reply, cid, upto)
        if refusal is not None:
            log.error("compaction refused: %s", refusal, extra={"campaign": cid})
            continue
        outcome, watermark, records, entries = _text(reply[0]), int(reply[1]), int(reply[2]), int(reply[3])
        if outcome == "moved":
            total += Compacted(moved=1)
            continue
        total += Compacted(records, entries)
        # The evaluation marks of the ticks compacted (keys.evaluated): a late delivery finds nothing to do.
        first = int(call.args[0])
        if watermark >= first:
            # One key a command: a cluster pipeline sends no multi-key DEL (the keys share a slot anyway).
            for t in range(first, watermark + 1):
                marks.delete(keys.evaluated(cid, t))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "compacted", extra={"campaign": cid, "watermark": watermark, "records": records, "entries": entries}
            )
    if len(marks):
        with translated_errors("delete evaluation marks"):
            marks.execute()
    return total


def _call(cid: str, first: int, upto: int) -> Call:
    """The script call compacting from ``first`` (the watermark + 1) towards ``upto``, one step."""
    record_keys = tuple(keys.reservation(cid, t) for t in range(first, min(upto, first + MAX_SPAN - 1) + 1))
    call_keys = (keys.reservations(cid), keys.ledger(cid), keys.history(cid), *record_keys)
    return Call("compact", call_keys, (str(first), str(upto), str(MAX_ENTRIES)))


def _first_tick(mark: str | None, start: str | None, oldest: list[tuple[str, float]], low: str | None = None) -> int:
    """The first tick that may still hold a record: above the watermark, else the flight's start.

    Before its first compaction a campaign can hold records only from its start (reserve refuses
    earlier ticks), at an unsettled tick, or at the lowest tick an unreserved settle wrote (its
    ``first`` in the history hash).
    """
    if mark is not None:
        return int(mark) + 1
    first = int(start) if start else 0
    if oldest:
        first = min(first, int(oldest[0][1]))
    if low is not None:
        first = min(first, int(low))
    return max(0, first)
