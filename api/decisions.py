"""``/decisions``: the bids placed, from the ``ce:decisions`` stream, as a page or live (SSE).

A stream entry holds one campaign's bids of one tick; each bid is listed on its own, with the id
``<entry id>/<index in the entry>`` (common/fleet/decisions.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.auth import Context, Read
from api.schemas import ANY_ROUTE, TOKEN, Decision, DecisionList
from common import keys
from common.fleet import decisions
from common.fleet.decisions import DecisionRecord
from common.redis_conn import connect_async

router = APIRouter(prefix="/decisions", tags=["decisions"], responses={**ANY_ROUTE, **TOKEN})

_BATCH = 1000
MAX_SCANNED = 200_000
# Evaluations of one tick can finish after the next tick's first ones: stop scanning back only
# once the stream is this many ticks older than the range asked for.
_TICK_SLACK = 2
KEEPALIVE_MS = 5000
# An event id to resume after: a bid's (``<entry id>/<index>``) or, as sent before, an entry's.
_EVENT_ID = re.compile(r"^\d+-\d+(/\d+)?$")


def decision(bid_id: str, record: DecisionRecord) -> Decision:
    return Decision(
        id=bid_id,
        ts=record.ts,
        tick=record.tick,
        campaign=record.campaign,
        platform=record.platform,
        bid=record.bid,
        spend_cap=record.spend_cap,
        cost=record.cost,
        clicks=record.clicks,
        conversions=record.conversions,
    )


@router.get("", dependencies=[Read], response_model=DecisionList)
def list_decisions(
    ctx: Context,
    campaign: Annotated[str | None, Query(max_length=64, description="Only this campaign's bids.")] = None,
    from_tick: Annotated[int | None, Query(ge=0)] = None,
    to_tick: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> DecisionList:
    """The newest bids first, filtered by campaign and tick range (inclusive)."""
    found: list[Decision] = []
    scanned = 0
    upper = "+"
    while len(found) < limit and scanned < MAX_SCANNED:
        batch: list[tuple[str, dict[str, str]]] = ctx.r.xrevrange(  # type: ignore[assignment]
            keys.DECISIONS, max=upper, min="-", count=_BATCH
        )
        if not batch:
            break
        scanned += len(batch)
        entries = decisions.parse(batch)
        for entry_id, entry in entries:
            if (campaign is not None and entry.campaign != campaign) or (to_tick is not None and entry.tick > to_tick):
                continue
            if from_tick is not None and entry.tick < from_tick:
                continue
            # Newest first: an entry's bids from its last placed.
            for index in reversed(range(len(entry.bids))):
                found.append(decision(decisions.bid_id(entry_id, index), entry.bids[index]))
                if len(found) == limit:
                    break
            if len(found) == limit:
                break
        oldest = entries[-1][1].tick
        if from_tick is not None and oldest < from_tick - _TICK_SLACK:
            break
        upper = f"({batch[-1][0]}"
    return DecisionList(decisions=found, scanned=scanned)


@router.get(
    "/stream",
    dependencies=[Read],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "One `decision` event per bid."}},
)
async def stream_decisions(
    ctx: Context,
    campaign: Annotated[str | None, Query(max_length=64, description="Only this campaign's bids.")] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this bid (sent by EventSource).")] = None,
) -> StreamingResponse:
    """Server-sent events: each bid as it is recorded (``event: decision``, ``id`` = the bid's id,
    ``<entry id>/<index>``, ``data`` = the decision as JSON), and a comment every few seconds to keep
    the connection open."""
    start = last_event_id if last_event_id and _EVENT_ID.match(last_event_id) else "$"
    url = ctx.settings.state_url
    return StreamingResponse(
        _events(url, start, campaign),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(bid_id: str, record: DecisionRecord) -> str:
    data = json.dumps(decision(bid_id, record).model_dump())
    return f"id: {bid_id}\nevent: decision\ndata: {data}\n\n"


async def _events(url: str, start: str, campaign: str | None) -> AsyncIterator[str]:
    client = connect_async(url)
    last, resume_index = decisions.split_bid_id(start)
    try:
        if last == "$":
            # Resolve "$" once: reading from "$" again after each batch would skip entries.
            newest: Any = await client.xrevrange(keys.DECISIONS, count=1)
            last = newest[0][0] if newest else "0-0"
        yield "retry: 2000\n\n"
        if resume_index is not None:
            # Resuming inside an entry: the bids of it after the last one sent, then the entries after.
            rest: Any = await client.xrange(keys.DECISIONS, min=last, max=last)
            for entry_id, entry in decisions.parse(rest):
                if (campaign is None or entry.campaign == campaign) and resume_index + 1 < len(entry.bids):
                    yield "".join(
                        _event(decisions.bid_id(entry_id, i), entry.bids[i])
                        for i in range(resume_index + 1, len(entry.bids))
                    )
        while True:  # ends when the client goes: the next write fails and cancels this
            replies: Any = await client.xread({keys.DECISIONS: last}, block=KEEPALIVE_MS, count=500)
            if not replies:
                yield ": keepalive\n\n"
                continue
            chunks: list[str] = []
            for _stream, entries in replies:
                parsed = decisions.parse(entries)
                if parsed:
                    last = parsed[-1][0]
                wanted = [(i, e) for i, e in parsed if campaign is None or e.campaign == campaign]
                chunks.extend(_event(bid_id, record) for bid_id, record in decisions.bids(wanted))
            if chunks:
                yield "".join(chunks)
    finally:
        await client.aclose()
