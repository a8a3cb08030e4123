"""Evaluate a group of campaigns for one tick: decide, reserve, bid, settle, record.

The path every cent takes: the ledger grants a reservation before any bid is placed, bids carry
only what was granted as their spend cap, and the platform's outcome is settled against that
reservation. A duplicate delivery of the same (campaign, tick) is recognised and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common import keys
from common.engine import CampaignState, Decision, decide
from common.errors import LedgerError, StoreUnavailable
from common.fleet import decisions, metrics, state
from common.fleet.decisions import CampaignDecision, DecisionRecord
from common.fleet.fleet import Fleet
from common.fleet.state import StateRecord
from common.fleet.store import campaign_from_hash
from common.fleet.tick import TICK_KEY_TTL, forecasts_for
from common.forecast.forecasts import Forecasts
from common.ledger import Balance, queue_balance
from common.market.platforms import Order
from common.models import Bid, Campaign, CampaignStatus, Outcome
from common.money import from_micros, to_micros_ceil, to_micros_floor
from common.redis_conn import store_call

log = logging.getLogger(__name__)

# A redelivered evaluation arrives within the broker's visibility timeout (a minute): the mark that
# recognises it needs to outlive that, not the day the tick's counters are kept. Marks are also
# bounded by ticks (keys.EVALUATION_MARK_SLOTS per campaign), so a backtest, which runs a minute of
# ticks in a moment, never piles them up.
EVALUATION_MARK_TTL = 600
SETTLE_ATTEMPTS = 4
NO_BALANCE = Balance(0, 0, 0, 0)


@dataclass
class Placed:
    """A bid that reached a platform, with its outcome."""

    bid: Bid
    outcome: Outcome
    value: float


@dataclass
class GroupReport:
    tick: int
    evaluated: int = 0
    late: int = 0
    duplicates: int = 0
    skipped: int = 0
    reserved: int = 0
    refused: int = 0
    placed: list[Placed] = field(default_factory=list)
    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def spend_micros(self) -> int:
        """What the bids cost, each rounded up to the micro-unit as the ledger charges it."""
        return sum(to_micros_ceil(p.outcome.cost) for p in self.placed)

    @property
    def value(self) -> float:
        return sum(p.value for p in self.placed)


@store_call("evaluate campaigns")
def evaluate(
    fleet: Fleet,
    campaign_ids: Sequence[str],
    tick: int,
    *,
    deadline: float | None = None,
    started: float | None = None,
    now: Callable[[], float] = time.time,
) -> GroupReport:
    """Evaluate ``campaign_ids`` for ``tick``; past ``deadline`` nothing is bid and all count as late."""
    report = GroupReport(tick)
    if deadline is not None and now() > deadline:
        report.late = len(campaign_ids)
        _count(fleet, report, started, now)
        log.warning("late evaluation dropped", extra={"tick": tick, "campaigns": len(campaign_ids)})
        return report
    forecasts, sigmas = _forecasts(fleet, tick)
    loaded = _load(fleet, campaign_ids, tick)
    report.duplicates = len(campaign_ids) - len(loaded)

    wanted: list[tuple[Campaign, Decision]] = []
    for view in loaded:
        campaign = view.campaign
        if campaign is None or campaign.status is not CampaignStatus.ACTIVE or not campaign.spec.in_flight(tick):
            report.skipped += 1
            continue
        if view.balance.remaining == 0 and view.balance.reserved == 0:
            # Spent to the last micro-unit (an operator may have lowered the budget to what was spent).
            fleet.store.finish(campaign.id)
            report.skipped += 1
            continue
        report.evaluated += 1
        decision = decide(view.engine_state(tick), forecasts, sigmas, fleet.settings.aggressiveness)
        report.decisions[campaign.id] = decision
        if decision.bids:
            wanted.append((campaign, decision))
        else:
            log.debug("no bid: %s", decision.reason, extra={"tick": tick, "campaign": campaign.id})

    if wanted and deadline is not None and now() > deadline:
        # The decisions took past the deadline (a wait on the forecasts): bid nothing on stale data.
        for campaign, _ in wanted:
            del report.decisions[campaign.id]
        report.evaluated -= len(wanted)
        report.late += len(wanted)
        wanted = []
    orders, granted = _reserve_and_submit(fleet, report, wanted, tick)
    outcomes = fleet.platforms.submit(tick, orders)
    report.placed = [
        Placed(o.bid, out, out.conversions * o.campaign.value_per_conversion)
        for o, out in zip(orders, outcomes, strict=True)
    ]
    _settle(fleet, report, granted, tick)
    _record(fleet, report, started, now)
    return report


def _reserve_and_submit(
    fleet: Fleet, report: GroupReport, wanted: list[tuple[Campaign, Decision]], tick: int
) -> tuple[list[Order], dict[str, dict[str, int]]]:
    """Reserve each campaign's caps and mark the grants submitted, in one round trip.

    Only a fresh submit may be bid on, and the bids go out right after it. From then on the sweeper
    never gives the grant back (the platform may have charged it): if the settle never arrives, it
    charges it in full. A grant the sweeper released first (a stalled evaluation) is refused: no bid.
    """
    submitted = fleet.ledger.reserve_and_submit_many(
        [(c.id, tick, {b.platform: to_micros_floor(b.spend_cap) for b in d.bids}) for c, d in wanted]
    )
    orders: list[Order] = []
    granted: dict[str, dict[str, int]] = {}
    for (campaign, decision), grant in zip(wanted, submitted, strict=True):
        if isinstance(grant, LedgerError):
            # Paused, finished or out of budget since it was read, or released by the sweeper.
            log.info("no grant: %s", grant, extra={"tick": tick, "campaign": campaign.id})
            report.refused += 1
            continue
        if not grant.usable:
            log.warning("grant already submitted by another delivery", extra={"tick": tick, "campaign": campaign.id})
            continue
        report.reserved += 1
        granted[campaign.id] = dict(grant.granted)
        for b in decision.bids:
            cap = grant.granted.get(b.platform, 0)
            if cap > 0:
                orders.append(Order(Bid(b.campaign, b.platform, b.bid, from_micros(cap)), campaign.spec))
    return orders, granted


def _settle(fleet: Fleet, report: GroupReport, granted: dict[str, dict[str, int]], tick: int) -> None:
    """Charge what the platforms charged, retrying while Redis is unreachable (settle is idempotent).

    Every submitted reservation is settled, those whose bids won nothing too (at zero).
    """
    costs: dict[str, dict[str, int]] = {cid: {} for cid in granted}
    for placed in report.placed:
        cap = granted[placed.bid.campaign][placed.bid.platform]
        cost = to_micros_ceil(placed.outcome.cost)
        if to_micros_floor(placed.outcome.cost) <= cap:
            # A bid that kept to its cap may pass the grant by the rounding up alone: charge the grant.
            cost = min(cost, cap)
        # Otherwise the platform overshot the cap: the ledger records the whole cost and the excess is alerted.
        costs[placed.bid.campaign][placed.bid.platform] = cost
    requests = [(cid, tick, spent) for cid, spent in costs.items()]
    for attempt in range(SETTLE_ATTEMPTS):
        try:
            settled = fleet.ledger.settle_many(requests)
            break
        except StoreUnavailable:
            if attempt == SETTLE_ATTEMPTS - 1:
                # The reservations stay submitted: the sweeper charges them in full, never less.
                raise
            time.sleep(0.05 * 2**attempt)
    for (cid, _, _), result in zip(requests, settled, strict=True):
        if isinstance(result, LedgerError):
            log.error("settle refused: %s", result, extra={"tick": tick, "campaign": cid})
    metrics.count_settlements(fleet.r, [s for s in settled if not isinstance(s, LedgerError)])


@dataclass(frozen=True)
class CampaignView:
    """What an evaluation reads of one campaign, in one round trip for the whole group."""

    id: str
    campaign: Campaign | None
    balance: Balance
    state: StateRecord

    def engine_state(self, tick: int) -> CampaignState:
        """The decision engine's view: remaining budget from the ledger, outcomes and pacing from state."""
        assert self.campaign is not None
        return CampaignState(
            spec=self.campaign.spec,
            tick=tick,
            remaining=from_micros(self.balance.remaining),
            spent=self.state.spend,
            clicks=self.state.clicks,
            conversions=self.state.conversions,
            pacing=self.state.pacing,
        )


def _forecasts(fleet: Fleet, tick: int) -> tuple[Forecasts, dict[str, float]]:
    """The tick's cached forecasts, read and parsed once per process and tick (they never change)."""
    memo = fleet.memo.get("forecasts")
    if memo is not None and memo[0] == tick:
        return memo[1], memo[2]
    cached = forecasts_for(fleet, tick)
    fleet.memo["forecasts"] = (tick, cached.forecasts, cached.sigmas)
    return cached.forecasts, cached.sigmas


def _load(fleet: Fleet, campaign_ids: Sequence[str], tick: int) -> list[CampaignView]:
    """Mark each (campaign, tick) as evaluated and read it; re-deliveries are left out.

    The mark comes first: ``SET ... GET`` writes the tick into the campaign's mark slot for it
    (``keys.evaluated``) and returns what the slot held. A second delivery of the same evaluation,
    even one running concurrently on another worker, finds its own tick there and bids nothing; a
    slot holding a later tick means this delivery is a lap of slots late, and it is left out too.
    """
    pipe = fleet.r.pipeline(transaction=False)
    for cid in campaign_ids:
        pipe.set(keys.evaluated(cid, tick), str(tick), ex=EVALUATION_MARK_TTL, get=True)
        pipe.hgetall(keys.campaign(cid))
        queue_balance(pipe, cid)
        state.queue_read(pipe, cid)
    replies = pipe.execute()
    views = []
    for i, cid in enumerate(campaign_ids):
        marked, raw, budget, stored = replies[4 * i : 4 * i + 4]
        if marked is not None and int(marked) >= tick:
            continue
        campaign = campaign_from_hash(raw) if raw.get("spec") else None
        # No budget reads as nothing left: an active campaign without one is finished.
        balance = Balance.from_row(budget) or NO_BALANCE
        views.append(CampaignView(cid, campaign, balance, StateRecord.from_hash(stored)))
    return views


def _record(fleet: Fleet, report: GroupReport, started: float | None, now: Callable[[], float]) -> None:
    """Decisions to the stream, outcomes and pacing to each campaign's state, counters to the tick."""
    pipe = fleet.r.pipeline(transaction=False)
    ts = now()
    totals: dict[str, list[float]] = {}
    placed_by: dict[str, list[DecisionRecord]] = {}
    for placed in report.placed:
        b, out = placed.bid, placed.outcome
        placed_by.setdefault(b.campaign, []).append(DecisionRecord(
            ts, report.tick, b.campaign, b.platform, b.bid, b.spend_cap, out.cost, out.clicks, out.conversions,
            out.waste,
        ))  # fmt: skip
        sums = totals.setdefault(b.campaign, [0.0, 0.0, 0.0, 0.0])
        for i, amount in enumerate((out.cost, out.clicks, out.conversions, placed.value)):
            sums[i] += amount
        log.debug(
            "bid placed",
            extra={"tick": report.tick, "campaign": b.campaign, "platform": b.platform, "bid": b.bid,
                   "spend_cap": b.spend_cap, "cost": out.cost},
        )  # fmt: skip
    # One entry per campaign, its bids packed: one XADD where one per bid took about 2.5.
    for records in placed_by.values():
        decisions.append(pipe, CampaignDecision.of(records), fleet.settings.decisions_maxlen)
    for cid, decision in report.decisions.items():
        if cid in totals:
            state.queue_outcomes(pipe, cid, *totals[cid])
        state.queue_decision(pipe, cid, decision, report.tick)
    _count(fleet, report, started, now, pipe=pipe)


def _count(
    fleet: Fleet, report: GroupReport, started: float | None, now: Callable[[], float], pipe: Any = None
) -> None:
    pipe = pipe if pipe is not None else fleet.r.pipeline(transaction=False)
    counters = keys.tick_counters(report.tick)
    for name, amount in (
        ("evaluated", report.evaluated), ("late", report.late), ("duplicates", report.duplicates),
        ("skipped", report.skipped), ("bids", len(report.placed)),
        ("spend_micros", report.spend_micros),
    ):  # fmt: skip
        if amount:
            pipe.hincrby(counters, name, amount)
    if report.placed:
        pipe.hincrbyfloat(counters, "value", report.value)
    planned = sum(d.planned for d in report.decisions.values())
    if planned:
        pipe.hincrbyfloat(counters, "planned", planned)
    if started is not None:
        pipe.zadd(keys.tick_latency(report.tick), {"worst": (now() - started) * 1000}, gt=True)
        pipe.expire(keys.tick_latency(report.tick), TICK_KEY_TTL)
    metrics.count_evaluation(pipe, report)
    pipe.execute()
