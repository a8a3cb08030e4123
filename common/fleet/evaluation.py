"""Evaluate a group of campaigns for one tick: decide, reserve, bid, settle, record.

The path every cent takes: the ledger grants a reservation before any bid is placed, bids carry
only what was granted as their spend cap, and the platform's outcome is settled against that
reservation. A duplicate delivery of the same (campaign, tick) is recognised and does nothing.

Faults stay with the platform they happen on: the bids go to each platform in a call of its own,
bounded by ``CE_PLATFORM_TIMEOUT_SECONDS``. A platform that refused before placing anything
(``BidsNotPlaced``) leaves its grants to be settled at zero, which gives them back; one whose outcome
is unknown (any other exception, a time-out) leaves the reservations of its campaigns submitted, for
the sweeper to charge in full (the bids may have spent them). Either way the other platforms' bids
are settled as usual, and the platform's breaker (``fleet/breaker.py``) counts the failing tick.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import NoScriptError

from common import keys
from common.engine import CampaignState, Decision, decide
from common.errors import BidsNotPlaced, LedgerError, PlatformTimeout, StoreUnavailable
from common.fleet import breaker, decisions, goals, late, metrics, publisher, scripts, stake, state
from common.fleet.breaker import OPEN, Breaker
from common.fleet.decisions import CampaignDecision, DecisionRecord
from common.fleet.fleet import Fleet
from common.fleet.state import StateRecord
from common.fleet.store import campaign_from_hash
from common.fleet.tick import TICK_KEY_TTL, forecasts_for
from common.forecast.forecasts import Forecasts
from common.ledger import Balance, Settlement
from common.market.platforms import Order
from common.models import Bid, Campaign, CampaignStatus, Outcome
from common.money import charge_micros, from_micros, to_micros_ceil, to_micros_floor
from common.redis_conn import execute_each, store_call, translated_errors

log = logging.getLogger(__name__)

# A redelivered evaluation arrives within the broker's visibility timeout (a minute): the mark that
# recognises it needs to outlive that, not the day the tick's counters are kept. Compaction deletes
# the marks of the ticks it compacts, so a backtest, which runs many ticks in 600 s, never piles them up.
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
    # Platform -> why its bids of this group failed; campaigns whose bids' fate is unknown.
    platform_errors: dict[str, str] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    # Platforms left out because their breaker is open, and the bids not placed because of it.
    breaker_skipped: dict[str, int] = field(default_factory=dict)
    # Orders (their index) whose outcome an adapter with LateOutcomes reports later (fleet/late.py),
    # and the campaigns they are of.
    pending: set[int] = field(default_factory=set)
    awaiting: set[str] = field(default_factory=set)
    # Evaluated campaign -> (remaining micros after this evaluation, flight's end): the fan-out's order.
    stakes: dict[str, tuple[int, int | None]] = field(default_factory=dict)

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
    token: str | None = None,
) -> GroupReport:
    """Evaluate ``campaign_ids`` for ``tick``; past ``deadline`` nothing is bid and all count as late.

    ``token`` names this delivery (a new one is made up when not given): the evaluation's marks hold
    it, so a client retry of the marking is recognised as this delivery's own.
    """
    report = GroupReport(tick)
    if deadline is not None and now() > deadline:
        report.late = len(campaign_ids)
        _count(fleet, report, started, now)
        log.warning("late evaluation dropped", extra={"tick": tick, "campaigns": len(campaign_ids)})
        return report
    token = token or uuid.uuid4().hex
    forecasts, sigmas = _forecasts(fleet, tick)
    loaded, breakers = _load(fleet, campaign_ids, tick, token, list(sigmas))
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
        report.stakes[campaign.id] = (view.balance.remaining, campaign.spec.end_tick)
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
    orders, granted = _reserve_and_submit(fleet, report, _open_breakers(report, wanted, breakers, tick), tick)
    outcomes = _place(fleet, report, orders, tick)
    report.placed = [
        Placed(o.bid, out, out.conversions * o.campaign.value_per_conversion)
        for o, out in zip(orders, outcomes, strict=True)
        if out is not None
    ]
    # A campaign with a bid whose fate is unknown keeps its reservation submitted, for the sweeper to
    # charge in full, and one with a pending outcome until it arrives; the others settle what their bids cost.
    report.awaiting = {orders[i].bid.campaign for i in report.pending}
    held = report.unknown | report.awaiting
    known = replace(report, placed=[p for p in report.placed if p.bid.campaign not in held])
    for settled in _settle(fleet, known, {c: g for c, g in granted.items() if c not in held}, tick):
        report.stakes[settled.campaign] = (settled.remaining, report.stakes[settled.campaign][1])
    if report.pending:
        late.hold(fleet, tick, orders, outcomes, report.pending, granted)
    _report_breakers(fleet, report, breakers, {o.bid.platform for o in orders})
    _record(fleet, report, started, now, token)
    return report


def _open_breakers(
    report: GroupReport, wanted: list[tuple[Campaign, Decision]], breakers: dict[str, Breaker], tick: int
) -> list[tuple[Campaign, Decision]]:
    """The wanted bids without those on platforms whose breaker is open this tick (nothing is reserved
    for them); a campaign left with no bid is not reserved at all. The decisions themselves stand."""
    skipped = {pid for pid, b in breakers.items() if b.state_at(tick) == OPEN}
    if not skipped:
        return wanted
    kept = []
    for campaign, decision in wanted:
        bids = tuple(b for b in decision.bids if b.platform not in skipped)
        for b in decision.bids:
            if b.platform in skipped:
                report.breaker_skipped[b.platform] = report.breaker_skipped.get(b.platform, 0) + 1
        if bids:
            kept.append((campaign, replace(decision, bids=bids)))
    return kept


# One thread per platform call, so that a call can be abandoned at its time-out; a process evaluates
# one group at a time, so a few threads serve it, and one stuck in a hung call leaves the others.
_CALLS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="platform")


def _place(fleet: Fleet, report: GroupReport, orders: list[Order], tick: int) -> list[Outcome | None]:
    """Each platform's bids in a call of its own; outcomes in order, None where the bid did not go through.

    A platform that fails affects only its own bids: refused before placing (``BidsNotPlaced``), the
    bids are known not to have been placed and their grants are settled at zero; any other exception
    or a time-out leaves it unknown whether they were, and their campaigns in ``report.unknown``.
    """
    outcomes: list[Outcome | None] = [None] * len(orders)
    if not orders:
        return outcomes
    by_platform: dict[str, list[int]] = {}
    for i, order in enumerate(orders):
        by_platform.setdefault(order.bid.platform, []).append(i)
    timeout = fleet.settings.platform_timeout_seconds
    calls: dict[str, Future[Sequence[Outcome | None]]] = {
        pid: _CALLS.submit(fleet.platforms.submit, tick, [orders[i] for i in indices])
        for pid, indices in by_platform.items()
    }
    ends = time.monotonic() + timeout
    for pid, call in calls.items():
        indices = by_platform[pid]
        try:
            try:
                got = call.result(timeout=max(0.0, ends - time.monotonic()))
            except FutureTimeout:
                raise PlatformTimeout(f"no answer within {timeout} s") from None
            if len(got) != len(indices):
                raise ValueError(f"{len(got)} outcomes for {len(indices)} bids")
        except BidsNotPlaced as exc:
            report.platform_errors[pid] = f"not placed: {exc}"
            log.warning("platform %s placed no bid: %s", pid, exc, extra={"tick": tick, "platform": pid})
            continue
        except Exception as exc:  # any failure of an adapter is that platform's alone
            report.platform_errors[pid] = f"unknown: {type(exc).__name__}: {exc}"
            if fleet.collects:
                report.pending.update(indices)  # the platform can say later what became of them
            else:
                report.unknown.update(orders[i].bid.campaign for i in indices)
            log.error(
                "platform %s failed, its bids may have been placed: %s", pid, exc, extra={"tick": tick, "platform": pid}
            )
            continue
        for i, outcome in zip(indices, got, strict=True):
            outcomes[i] = outcome
            if outcome is None:
                report.pending.add(i)
    return outcomes


def _report_breakers(fleet: Fleet, report: GroupReport, breakers: dict[str, Breaker], tried: set[str]) -> None:
    """Tell the breakers of the platforms tried what happened; a success only where it changes something."""
    outcomes: dict[str, str | None] = {pid: error for pid, error in report.platform_errors.items()}
    for pid in tried - set(outcomes):
        if pid not in breakers or not breakers[pid].clean:
            outcomes[pid] = None
    if outcomes:
        settings = fleet.settings
        breaker.report(
            fleet.r, report.tick, outcomes, failures=settings.breaker_failures, cooldown=settings.breaker_cooldown_ticks
        )


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


def _settle(fleet: Fleet, report: GroupReport, granted: dict[str, dict[str, int]], tick: int) -> list[Settlement]:
    """Charge what the platforms charged, retrying while Redis is unreachable (settle is idempotent).

    Every submitted reservation is settled, those whose bids won nothing too (at zero). Returns the
    settlements made (refusals are logged).
    """
    costs: dict[str, dict[str, int]] = {cid: {} for cid in granted}
    for placed in report.placed:
        cap = granted[placed.bid.campaign][placed.bid.platform]
        costs[placed.bid.campaign][placed.bid.platform] = charge_micros(placed.outcome.cost, cap)
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
    made = [s for s in settled if not isinstance(s, LedgerError)]
    metrics.count_settlements(fleet.r, made)
    return made


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


def _load(
    fleet: Fleet, campaign_ids: Sequence[str], tick: int, token: str, platforms: list[str]
) -> tuple[list[CampaignView], dict[str, Breaker]]:
    """Mark each (campaign, tick) as evaluated and read it, with the platforms' breakers; re-deliveries
    are left out.

    The mark (``SET NX`` of the delivery's token, read back) comes first, so a second delivery of the
    same evaluation, even one running concurrently on another worker, finds another token and bids
    nothing, while a client retry of this pipeline finds its own. Mark and reads are one script call
    per campaign (``lua/load.lua``): five commands for the client to pack and parse became one.
    """
    load = scripts.script("load")
    calls = [
        ([keys.evaluated(cid, tick), keys.campaign(cid), keys.budget(cid), keys.state(cid)], _load_args(token))
        for cid in campaign_ids
    ]
    pipe = fleet.r.pipeline(transaction=False)
    breaker.queue_read(pipe, platforms)
    for call in calls:
        load.queue(pipe, *call)
    # One campaign's damaged key (an error reply in its place) leaves that campaign out, not the group.
    replies = execute_each(pipe)
    read = replies[: len(platforms)]
    breakers = breaker.parse(platforms, [{} if isinstance(raw, Exception) else raw for raw in read])
    replies = load.rerun_missing(fleet.r, calls, replies[len(platforms) :])
    views = []
    for cid, reply in zip(campaign_ids, replies, strict=True):
        # Only the mark: another delivery's. The script reads on for this delivery's own mark, also once
        # recorded (a repeat of the whole evaluation by this delivery).
        if isinstance(reply, Exception) or len(reply) < 4:
            continue
        _, raw, budget, stored = reply
        failed = [part for part in (raw, budget, stored) if isinstance(part, Exception)]
        if failed:
            # Counted as skipped: marked, but nothing can be decided on data that cannot be read.
            log.error("campaign unreadable: %s", failed[0], extra={"tick": tick, "campaign": cid})
            views.append(CampaignView(cid, None, NO_BALANCE, StateRecord()))
            continue
        spec = _pairs(raw)
        campaign = campaign_from_hash(spec) if spec.get("spec") else None
        # No budget reads as nothing left: an active campaign without one is finished.
        balance = Balance.from_row(budget) or NO_BALANCE
        views.append(CampaignView(cid, campaign, balance, StateRecord.from_hash(_pairs(stored))))
    return views, breakers


def _load_args(token: str) -> list[Any]:
    """ARGV of ``lua/load.lua``: the token, how long the mark lives, the budget fields to read."""
    return [token, EVALUATION_MARK_TTL, *Balance.FIELDS]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns ``HGETALL``: field, value, field, value..."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _record(fleet: Fleet, report: GroupReport, started: float | None, now: Callable[[], float], token: str) -> None:
    """Decisions to the stream, outcomes and pacing to each campaign's state, counters to the tick.

    One pipeline, sent once (no client retry: a repeat would append the decisions and add the counts
    twice). If its reply is lost, the state writes are sent again through the retrying client: they
    apply once per (campaign, tick) whatever happened to the first, so no outcome is lost or doubled.
    """
    pipe = fleet.once.pipeline(transaction=False)
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
    writes = [
        (cid, tuple(totals.get(cid, (0.0, 0.0, 0.0, 0.0))), decision) for cid, decision in report.decisions.items()
    ]
    record = scripts.script("record_state")
    calls = [state.record_call(cid, report.tick, token, outcomes, decision) for cid, outcomes, decision in writes]  # type: ignore[arg-type]
    first = len(placed_by)  # the pipeline's replies: the decision entries', then these
    for call in calls:
        record.queue(pipe, *call)
    stake.queue_record(pipe, report.stakes)
    try:
        replies = _count(fleet, report, started, now, pipe=pipe)
    except StoreUnavailable:
        with translated_errors("record the campaigns' state"):
            again = fleet.r.pipeline(transaction=False)
            for call in calls:
                record.queue(again, *call)
            record.rerun_missing(fleet.r, calls, execute_each(again))
        raise
    recorded = replies[first : first + len(calls)]
    missing = [i for i, reply in enumerate(recorded) if isinstance(reply, NoScriptError)]
    if missing:
        # A server that did not know the script ran nothing: the writes go again, through the retrying
        # client (each applies once per campaign and tick).
        with translated_errors("record the campaigns' state"):
            recorded = record.rerun_missing(fleet.r, calls, recorded)
        for i in missing:
            if isinstance(recorded[i], Exception):
                log.error("recording the evaluation: %s", recorded[i], extra={"tick": report.tick})
    # Recorded: every outcome, no-bids too, to NATS when configured (buffered, never blocks or raises).
    publisher.publish(fleet, report, ts)


def _count(
    fleet: Fleet, report: GroupReport, started: float | None, now: Callable[[], float], pipe: Any = None
) -> list[Any]:
    """Add the group's figures to the tick's counters and the metrics, on ``pipe`` when given (after
    what the caller queued on it), and send it; the replies, the caller's first.

    The counters of each hash go as one script call (``metrics.Increments``), not a command each.
    """
    pipe = pipe if pipe is not None else fleet.once.pipeline(transaction=False)
    first = len(pipe)  # the caller's commands come before these
    counters = keys.tick_counters(report.tick)
    increments = metrics.Increments()
    for name, amount in (
        ("evaluated", report.evaluated), ("late", report.late), ("duplicates", report.duplicates),
        # Bids placed with outcomes to come count among the tick's bids; what they cost reaches the
        # fleet's counters when settled (fleet/late.py), after this tick's summary.
        ("skipped", report.skipped), ("bids", len(report.placed) + len(report.pending)),
        ("spend_micros", report.spend_micros),
    ):  # fmt: skip
        if amount:
            increments.hincrby(counters, name, amount)
    if report.placed:
        increments.hincrbyfloat(counters, "value", report.value)
    planned = sum(d.planned for d in report.decisions.values())
    if planned:
        increments.hincrbyfloat(counters, "planned", planned)
    goals.queue_count(increments, counters, report.decisions.values())
    metrics.count_evaluation(increments, report)
    for pid, error in report.platform_errors.items():
        metrics.count_platform_failure(increments, pid, error.split(":", 1)[0].replace(" ", "_"))
    for pid, bids in report.breaker_skipped.items():
        metrics.count_platform_failure(increments, pid, "skipped", bids)
    calls = increments.queue(pipe)
    if started is not None:
        pipe.zadd(keys.tick_latency(report.tick), {"worst": (now() - started) * 1000}, gt=True)
        pipe.expire(keys.tick_latency(report.tick), TICK_KEY_TTL)
    with translated_errors("count the evaluation"):
        replies = execute_each(pipe)
        counted = replies[first : first + calls]
        if any(isinstance(reply, NoScriptError) for reply in counted):
            # Not run at all: sent again once loaded, through the client that never retries (increments).
            replies[first : first + calls] = scripts.script("increments").rerun_missing(
                fleet.once, increments.calls(), counted
            )
    for reply in replies:
        # A campaign's state that cannot be written (a key of the wrong type) is that campaign's; a
        # script the server did not know is sent again by the caller.
        if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
            log.error("recording the evaluation: %s", reply, extra={"tick": report.tick})
    return replies
