"""Outcomes that come after the bids: held, asked for each tick, settled when they arrive.

An adapter with ``LateOutcomes`` may answer a bid ``PENDING`` (paper trading until the tick's
figures are posted, a platform that reports spend later), and its bids whose submit failed or timed
out are treated alike: they may have been placed, and the platform can say. The evaluation then
settles nothing for that campaign and tick; ``hold`` writes a ``LateRecord`` with every bid of it
(the outcomes already known too, so that the one settle charges them all) and its reservation stays
submitted. Each tick, after its fan-out, the tick task's ``collect`` asks the adapter for the
outcomes still pending, once per past tick and platform, and settles each (campaign, tick) whose
outcomes are all known, at what they cost: the same rounding as the evaluation's settle, the same
idempotent ledger script.

If they never come: after ``CE_RESERVATION_GRACE_TICKS`` the sweeper charges the reservation in
full, as for any bid whose fate is unknown. An outcome arriving after that is still settled: the
ledger keeps the full charge, or adds what the platform charged beyond the grant (settle.lua), so
money is never under-counted and never counted twice. Records are dropped once their tick is about
to be compacted (``CE_LEDGER_DETAIL_TICKS``), when a settle would be refused.

The campaign's outcomes (state) and the decision stream take the late bids once: after the settle,
the record's deletion decides which caller adds them (``DEL`` answers 1 to one caller only). A
crash between the two leaves the money right and those outcomes out of the campaign's counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from common import keys
from common.errors import LedgerError
from common.fleet import decisions, metrics, publisher, state
from common.fleet.decisions import CampaignDecision, DecisionRecord
from common.fleet.outcomes import OutcomeMessage, PublishedBid
from common.ledger.errors import TickCompacted, UnknownBudget
from common.market.platforms import LateOutcomes, Order
from common.models import NO_OUTCOME, Bid, CampaignSpec, Outcome
from common.money import charge_micros, to_micros_ceil
from common.redis_conn import Client, store_call

if TYPE_CHECKING:
    from common.fleet.fleet import Fleet

log = logging.getLogger(__name__)

# Records read per tick: bounds the tick task's work when a platform has reported nothing for long.
COLLECT_LIMIT = 5_000
BidState = Literal["pending", "known"]


@dataclass(frozen=True, slots=True)
class HeldBid:
    platform: str
    bid: float
    spend_cap: float
    grant: int  # micro-units the ledger granted this bid
    state: BidState
    outcome: Outcome  # NO_OUTCOME while pending
    late: bool  # its outcome came after the evaluation: not yet in the campaign's state

    def cost_micros(self) -> int:
        return charge_micros(self.outcome.cost, self.grant)


@dataclass(frozen=True, slots=True)
class LateRecord:
    """One (campaign, tick) waiting for outcomes: the string ``{c:<id>}:late:<tick>`` holds its JSON."""

    campaign: str
    tick: int
    spec: CampaignSpec
    bids: tuple[HeldBid, ...]

    @property
    def complete(self) -> bool:
        return all(b.state == "known" for b in self.bids)

    def orders(self, platform: str) -> list[tuple[int, Order]]:
        return [
            (i, Order(Bid(self.campaign, b.platform, b.bid, b.spend_cap), self.spec))
            for i, b in enumerate(self.bids)
            if b.state == "pending" and b.platform == platform
        ]

    def to_json(self) -> str:
        bids = [[b.platform, b.bid, b.spend_cap, b.grant, b.state, list(_fields(b.outcome)), b.late] for b in self.bids]
        return json.dumps({"campaign": self.campaign, "tick": self.tick, "spec": self.spec.model_dump(), "bids": bids})

    @classmethod
    def from_json(cls, text: str) -> LateRecord:
        doc = json.loads(text)
        bids = tuple(
            HeldBid(str(p), float(b), float(c), int(g), s, Outcome(*map(float, o)), bool(late))
            for p, b, c, g, s, o, late in doc["bids"]
        )
        return cls(str(doc["campaign"]), int(doc["tick"]), CampaignSpec.model_validate(doc["spec"]), bids)


def _fields(o: Outcome) -> tuple[float, float, float, float]:
    return (o.cost, o.clicks, o.conversions, o.waste)


def _member(campaign: str, tick: int) -> str:
    return f"{tick}:{campaign}"


@store_call("hold pending outcomes")
def hold(
    fleet: Fleet,
    tick: int,
    orders: Sequence[Order],
    outcomes: Sequence[Outcome | None],
    pending: set[int],
    granted: dict[str, dict[str, int]],
) -> int:
    """Keep every campaign with a pending bid for ``collect``; returns how many (campaign, tick) were held."""
    by_campaign: dict[str, list[int]] = {}
    held = {orders[i].bid.campaign for i in pending}
    for i, order in enumerate(orders):
        if order.bid.campaign in held:
            by_campaign.setdefault(order.bid.campaign, []).append(i)
    ttl = _ttl_seconds(fleet)
    pipe = fleet.r.pipeline(transaction=False)
    for cid, indices in by_campaign.items():
        bids = []
        for i in indices:
            b, out = orders[i].bid, outcomes[i]
            # A bid neither pending nor answered was refused before it was placed: it cost nothing.
            known: BidState = "pending" if i in pending else "known"
            grant = granted[cid][b.platform]
            bids.append(HeldBid(b.platform, b.bid, b.spend_cap, grant, known, out or NO_OUTCOME, False))
        record = LateRecord(cid, tick, orders[indices[0]].campaign, tuple(bids))
        pipe.set(keys.late(cid, tick), record.to_json(), ex=ttl)
        pipe.zadd(keys.LATE, {_member(cid, tick): tick})
    pipe.execute()
    log.debug("tick %d: outcomes pending for %d campaigns", tick, len(by_campaign), extra={"tick": tick})
    return len(by_campaign)


def _ttl_seconds(fleet: Fleet) -> int:
    # Past the ticks the ledger keeps in detail a settle is refused anyway; a day at the least.
    return max(86_400, int(fleet.settings.ledger_detail_ticks * fleet.settings.tick_seconds) + 3_600)


@dataclass
class Collected:
    settled: int = 0  # (campaign, tick) settled at what their outcomes cost
    waiting: int = 0  # still waiting for an outcome
    dropped: int = 0  # given up: their tick is about to be compacted


@store_call("collect pending outcomes")
def collect(fleet: Fleet, tick: int) -> Collected:
    """Ask for the pending outcomes of ticks before ``tick`` and settle what is complete."""
    done = Collected()
    adapter = fleet.platforms
    if not isinstance(adapter, LateOutcomes):
        return done
    members: list[str] = fleet.r.zrangebyscore(keys.LATE, "-inf", tick - 1, start=0, num=COLLECT_LIMIT)  # type: ignore[assignment]
    if not members:
        return done
    oldest = tick - fleet.settings.ledger_detail_ticks + 2
    pairs = [(int(t), cid) for t, _, cid in (m.partition(":") for m in members)]
    pipe = fleet.r.pipeline(transaction=False)
    for t, cid in pairs:
        pipe.get(keys.late(cid, t))
    records: list[LateRecord] = []
    gone = []
    for (t, cid), doc in zip(pairs, pipe.execute(), strict=True):
        if doc is None or t < oldest:
            gone.append((t, cid))
        else:
            records.append(LateRecord.from_json(doc))
    if gone:
        _forget(fleet, gone)
        done.dropped = len(gone)
        log.warning("gave up waiting for the outcomes of %d (campaign, tick): charged in full by the sweeper",
                    len(gone), extra={"tick": tick})  # fmt: skip
    records = _ask(adapter, records, tick)
    complete = [r for r in records if r.complete]
    waiting = [r for r in records if not r.complete]
    if waiting:
        pipe = fleet.r.pipeline(transaction=False)
        for r in waiting:
            pipe.set(keys.late(r.campaign, r.tick), r.to_json(), keepttl=True)
        pipe.execute()
    done.waiting = len(waiting)
    done.settled = _settle(fleet, complete)
    return done


def _ask(adapter: LateOutcomes, records: list[LateRecord], tick: int) -> list[LateRecord]:
    """The records with what the adapter knows now; one call per past tick and platform.

    A platform whose call fails is not asked again this time: one that is down costs one time-out.
    """
    wanted: dict[tuple[int, str], list[tuple[int, int, Order]]] = {}
    for r_index, r in enumerate(records):
        for b in {b.platform for b in r.bids if b.state == "pending"}:
            wanted.setdefault((r.tick, b), []).extend((r_index, i, o) for i, o in r.orders(b))
    failed: set[str] = set()
    updated = list(records)
    for (t, platform), items in sorted(wanted.items()):
        if platform in failed:
            continue
        try:
            got = adapter.collect(t, [o for _, _, o in items])
            if len(got) != len(items):
                raise ValueError(f"{len(got)} outcomes for {len(items)} bids")
        except Exception as exc:  # a platform's failure leaves its outcomes pending, nothing else
            failed.add(platform)
            log.warning("platform %s: asking for outcomes of tick %d failed: %s", platform, t, exc,
                        extra={"tick": tick, "platform": platform})  # fmt: skip
            continue
        for (r_index, i, _), outcome in zip(items, got, strict=True):
            if outcome is not None:
                r = updated[r_index]
                bids = list(r.bids)
                bids[i] = replace(bids[i], state="known", outcome=outcome, late=True)
                updated[r_index] = replace(r, bids=tuple(bids))
    return updated


def _settle(fleet: Fleet, complete: list[LateRecord]) -> int:
    if not complete:
        return 0
    requests = [(r.campaign, r.tick, _costs(r)) for r in complete]
    results = fleet.ledger.settle_many(requests)
    closed = []
    for r, result in zip(complete, results, strict=True):
        # Compacted (closed long ago) or no budget (the campaign was deleted): nothing left to settle.
        if isinstance(result, LedgerError) and not isinstance(result, TickCompacted | UnknownBudget):
            # Left for the next tick: a refusal here is a fault (logged), not a reason to lose the outcome.
            log.error("late settle refused: %s", result, extra={"tick": r.tick, "campaign": r.campaign})
            continue
        closed.append(r)
    # The DEL decides who records the outcomes: never retried, or a repeat would answer 0 and lose them.
    pipe = fleet.once.pipeline(transaction=False)
    for r in closed:
        pipe.delete(keys.late(r.campaign, r.tick))
    deleted = pipe.execute()
    # Settle is idempotent, its count is not: only the records this call closed are counted.
    first_of = {(r.campaign, r.tick) for r, first in zip(closed, deleted, strict=True) if first}
    metrics.count_settlements(fleet.r, [
        s for r, s in zip(complete, results, strict=True)
        if not isinstance(s, LedgerError) and (r.campaign, r.tick) in first_of
    ])  # fmt: skip
    pipe = fleet.once.pipeline(transaction=False)  # increments: never retried
    ts = time.time()
    for r, first in zip(closed, deleted, strict=True):
        late = [b for b in r.bids if b.late]
        if not first or not late:
            continue  # another caller took it (its outcomes are counted once)
        value = sum(b.outcome.conversions for b in late) * r.spec.value_per_conversion
        spend, clicks = sum(b.outcome.cost for b in late), sum(b.outcome.clicks for b in late)
        state.queue_outcomes(pipe, r.campaign, spend, clicks, sum(b.outcome.conversions for b in late), value)
        metrics.count_late_bids(pipe, len(late), sum(to_micros_ceil(b.outcome.cost) for b in late), value)
        records = [
            DecisionRecord(ts, r.tick, r.campaign, b.platform, b.bid, b.spend_cap, *_fields(b.outcome)) for b in late
        ]
        decisions.append(pipe, CampaignDecision.of(records), fleet.settings.decisions_maxlen)
    for r in closed:
        pipe.zrem(keys.LATE, _member(r.campaign, r.tick))
    pipe.execute()
    _publish(fleet, [r for r, first in zip(closed, deleted, strict=True) if first], ts)
    return len(closed)


def _publish(fleet: Fleet, settled: list[LateRecord], ts: float) -> None:
    """The settled outcomes to NATS, when configured: one message per (campaign, tick), never raises."""
    if fleet.settings.decisions_nats_url is None or not settled:
        return
    messages = [
        OutcomeMessage(r.campaign, r.tick, ts, tuple(
            PublishedBid(b.platform, b.bid, b.spend_cap, b.outcome.cost, b.outcome.clicks, b.outcome.conversions)
            for b in r.bids
        ), late=True)
        for r in settled
    ]  # fmt: skip
    try:
        publisher.for_process(fleet.settings).offer(messages)
    except Exception:  # settled and recorded: publishing is never the settlement's failure
        log.exception("late outcomes of %d (campaign, tick) not handed to the publisher", len(messages))


def _costs(record: LateRecord) -> dict[str, int]:
    return {b.platform: b.cost_micros() for b in record.bids}


def _forget(fleet: Fleet, pairs: list[tuple[int, str]]) -> None:
    pipe = fleet.r.pipeline(transaction=False)
    for t, cid in pairs:
        pipe.delete(keys.late(cid, t))
        pipe.zrem(keys.LATE, _member(cid, t))
    pipe.execute()


@store_call("count pending outcomes")
def pending_count(client: Client) -> int:
    """(campaign, tick) waiting for outcomes, fleet-wide."""
    return int(client.zcard(keys.LATE))  # type: ignore[arg-type]
