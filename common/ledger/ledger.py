"""The budget ledger: every micro-unit a campaign holds, reserves and spends, moved by Lua scripts.

Each movement is one script run inside the campaign's hash slot, so it is atomic and valid on Redis
Cluster. Reserve, submit, settle and release are keyed by (campaign, tick) and adjust by an operation
id, so any call may be repeated (a redelivered task, a client retry after a lost reply) without
moving money twice: a repeat returns the first result.

A caller reserves, then submits the reservation right before its bids go out, then settles what
they cost. A submitted reservation is never released: if its settle never comes, the sweeper
charges every grant in full (a platform may have spent up to it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis

from common import keys
from common.errors import LedgerError, LedgerFault
from common.ledger.errors import LedgerInputError, UnknownBudget, from_reply, is_refusal
from common.ledger.records import Balance, Grant, ReservationState, Settlement, Swept
from common.ledger.scripts import Call, Client, Scripts
from common.redis_conn import UNAVAILABLE, translated_errors

log = logging.getLogger(__name__)

# Lua numbers are doubles: every amount, and every sum the scripts form, stays exact up to 2^53 - 1.
MAX_MICROS = 2**53 - 1
OP_ID_MAX = 64
# Open reservations read per campaign per sweep round trip.
SWEEP_PAGE = 500

Request = tuple[str, int, Mapping[str, int]]
Key = tuple[str, int]


class Ledger:
    """Budgets of campaigns in integer micro-units; see docs/ledger.md."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.scripts = Scripts(client)

    # --- budgets ------------------------------------------------------------------------------
    def open(self, campaign: str, budget: int) -> Balance:
        """Give ``campaign`` its budget; a second call changes nothing and returns the balance."""
        _campaign_id(campaign)
        _amount(budget, "budget")
        if budget == 0:
            raise LedgerInputError.one("budget", "must be > 0")
        reply = self._run(Call("open", (keys.budget(campaign), keys.ledger(campaign)), (str(budget),)), campaign)
        created, *figures = (int(x) for x in reply)
        log.info("budget %s", "opened" if created else "already open", extra={"campaign": campaign, "budget": budget})
        return Balance(*figures)

    def adjust(self, campaign: str, delta: int, *, op_id: str | None = None) -> Balance:
        """Raise (delta > 0) or lower the budget; ``AdjustRefused`` below spent + reserved.

        ``op_id`` names the operation so that a retry of the same call applies it once; one is made
        up when not given, which still covers retries inside the Redis client.
        """
        _campaign_id(campaign)
        if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0 or abs(delta) > MAX_MICROS:
            raise LedgerInputError.one("delta", f"must be a non-zero integer of micro-units, got {delta!r}")
        op = op_id if op_id is not None else uuid.uuid4().hex
        if not isinstance(op, str) or not 0 < len(op) <= OP_ID_MAX:
            raise LedgerInputError.one("op_id", f"must be 1-{OP_ID_MAX} characters")
        call = Call(
            "adjust", (keys.budget(campaign), keys.ledger(campaign), keys.adjustments(campaign)), (str(delta), op)
        )
        replay, *figures = (int(x) for x in self._run(call, campaign))
        log.info("budget adjusted", extra={"campaign": campaign, "delta": delta, "op": op, "replay": bool(replay)})
        return Balance(*figures)

    def balance(self, campaign: str) -> Balance:
        found = self.balances([campaign])
        if campaign not in found:
            raise UnknownBudget(f"campaign {campaign}: no budget was opened for this campaign")
        return found[campaign]

    def balances(self, campaigns: Iterable[str]) -> dict[str, Balance]:
        """Balances in one round trip; campaigns without a budget are left out."""
        ids = [_campaign_id(cid) for cid in campaigns]
        with translated_errors("read balances"):
            pipe = self.client.pipeline(transaction=False)
            for cid in ids:
                queue_balance(pipe, cid)
            rows = pipe.execute()
        found = {cid: Balance.from_row(row) for cid, row in zip(ids, rows, strict=True)}
        return {cid: balance for cid, balance in found.items() if balance is not None}

    # --- reservations -------------------------------------------------------------------------
    def reserve(self, campaign: str, tick: int, caps: Mapping[str, int]) -> Grant:
        """Hold up to ``caps`` (platform -> micro-units, best first) for the bids of one tick.

        Grants are partial when the budget runs short: platforms are filled in order. Refused with
        ``NotReservable`` unless the campaign is active and ``tick`` lies in its flight. A repeat for
        the same tick returns the first grant (``replay``) and changes nothing.
        """
        reply = self._run(_reserve_call(campaign, tick, caps), campaign, tick)
        return _grant(campaign, tick, reply)

    def reserve_many(self, requests: Iterable[Request]) -> list[Grant | LedgerError]:
        """``reserve`` for many (campaign, tick, caps) in one round trip; refusals come back in place.

        Bad arguments anywhere raise ``LedgerInputError`` before anything is sent.
        """
        batch = list(requests)
        calls = [_reserve_call(cid, tick, caps) for cid, tick, caps in batch]
        replies = self._run_many(calls)
        return [
            _refusal(reply, cid, tick) or _grant(cid, tick, reply)
            for (cid, tick, _), reply in zip(batch, replies, strict=True)
        ]

    def reserve_and_submit_many(self, requests: Iterable[Request]) -> list[Grant | LedgerError]:
        """``reserve`` then ``submit`` each (campaign, tick, caps), all in one round trip.

        For a caller that bids right after reserving, with nothing in between that could fail:
        it saves a round trip per evaluation, and the two scripts run as one call per campaign
        (``lua/reserve_submit.lua``). Returns the submit replies: bid only on a ``usable`` one. A
        refused reserve comes back as its refusal, in place, and nothing is submitted.
        """
        batch = list(requests)
        calls = [replace(_reserve_call(cid, tick, caps), script="reserve_submit") for cid, tick, caps in batch]
        replies = self._run_many(calls)
        return [
            _refusal(reply, cid, tick) or _grant(cid, tick, reply, "submit")
            for (cid, tick, _), reply in zip(batch, replies, strict=True)
        ]

    def submit(self, campaign: str, tick: int) -> Grant:
        """Mark the reservation as bid on; call it right before the bids go to the platforms.

        Returns the grant with state ``submitted``: bid only when ``usable`` (a fresh submit), each
        bid capped by its platform's grant. A repeat returns the same grant with ``replay`` set and
        changes nothing: its bids may already be out, so place none and do not settle it with made
        up costs (the sweeper charges it in full unless the first caller settles). Refused, with
        nothing written, by ``NoReservation``, ``ReservationReleased`` (the sweeper or ``release``
        gave the grant back) or ``ReservationSettled``: then no bid may be placed.
        """
        reply = self._run(_submit_call(campaign, tick), campaign, tick)
        return _grant(campaign, tick, reply, "submit")

    def submit_many(self, requests: Iterable[Key]) -> list[Grant | LedgerError]:
        """``submit`` for many (campaign, tick) in one round trip; refusals come back in place."""
        batch = list(requests)
        replies = self._run_many([_submit_call(cid, tick) for cid, tick in batch])
        return [
            _refusal(reply, cid, tick) or _grant(cid, tick, reply, "submit")
            for (cid, tick), reply in zip(batch, replies, strict=True)
        ]

    def settle(self, campaign: str, tick: int, costs: Mapping[str, int]) -> Settlement:
        """Charge ``costs`` (platform -> micro-units, each <= its grant); the rest goes back to remaining.

        The reservation may be open or submitted. A repeat returns the first settlement and changes
        nothing; so does a settle after the sweeper charged a submitted reservation in full (the
        returned ``spent`` is then every grant). Refused with ``NoReservation``,
        ``ReservationReleased`` or ``SettleRefused``.
        """
        reply = self._run(_settle_call(campaign, tick, costs), campaign, tick)
        return _settlement(campaign, tick, costs, reply)

    def settle_many(self, requests: Iterable[Request]) -> list[Settlement | LedgerError]:
        """``settle`` for many (campaign, tick, costs) in one round trip; refusals come back in place."""
        batch = list(requests)
        replies = self._run_many([_settle_call(cid, tick, costs) for cid, tick, costs in batch])
        return [
            _refusal(reply, cid, tick) or _settlement(cid, tick, costs, reply)
            for (cid, tick, costs), reply in zip(batch, replies, strict=True)
        ]

    def release(self, campaign: str, tick: int) -> int:
        """Give back an open reservation (never submitted); returns the micro-units it released.

        A repeat returns the same amount and changes nothing; a settled or unknown tick releases 0.
        A submitted reservation is refused with ``ReservationSubmitted``, nothing written: its bids
        may have spent the grant, so only settle (or the sweeper's full charge) closes it.
        """
        outcome, amount = self._run(_release_call(campaign, tick), campaign, tick)
        log.debug("release", extra={"campaign": campaign, "tick": tick, "outcome": _text(outcome), "amount": amount})
        return int(amount)

    def open_ticks(self, campaign: str, before_tick: int | None = None) -> list[int]:
        """Ticks of the campaign's unsettled (open or submitted) reservations, oldest first.

        All of them, or those < ``before_tick``.
        """
        _campaign_id(campaign)
        upper = "+inf" if before_tick is None else f"({_tick(before_tick)}"
        with translated_errors("read open reservations"):
            ticks: list[Any] = self.client.zrangebyscore(keys.reservations(campaign), "-inf", upper)  # type: ignore[assignment]
        return [int(t) for t in ticks]

    def sweep(self, campaigns: Iterable[str], before_tick: int) -> Swept:
        """Close every unsettled reservation with tick < ``before_tick``; returns what this call closed.

        An open one is released (its grant goes back to remaining). A submitted one is charged at
        its full grant (every grant moves to spent, `settle` entries marked `by sweeper`): its bids
        went out and their real cost never arrived, and a platform may have charged up to each grant.
        Racing a settle or a submit is safe: each is one script, whichever runs first wins and the
        other sees its outcome. A cut-off of 0 or below (early in a run, before the grace has
        passed) closes nothing.
        """
        if isinstance(before_tick, bool) or not isinstance(before_tick, int):
            raise LedgerInputError.one("before_tick", f"must be an integer tick, got {before_tick!r}")
        pending = [_campaign_id(cid) for cid in campaigns] if before_tick > 0 else []
        released = charged = 0
        while pending:
            with translated_errors("read open reservations"):
                pipe = self.client.pipeline(transaction=False)
                for cid in pending:
                    pipe.zrangebyscore(keys.reservations(cid), "-inf", f"({before_tick}", start=0, num=SWEEP_PAGE)
                pages = pipe.execute()
            due = [(cid, int(t)) for cid, page in zip(pending, pages, strict=True) for t in page]
            replies = self._run_many([_release_call(cid, tick, sweep=True) for cid, tick in due])
            failed = set()
            for (cid, tick), reply in zip(due, replies, strict=True):
                refusal = _refusal(reply, cid, tick)
                if refusal is not None:
                    log.error("sweep could not close: %s", refusal, extra={"campaign": cid, "tick": tick})
                    failed.add(cid)
                    continue
                outcome, amount = _text(reply[0]), int(reply[1])
                if outcome == "released":
                    released += 1
                    log.debug("swept", extra={"campaign": cid, "tick": tick, "amount": amount})
                elif outcome == "charged":
                    charged += 1
                    log.warning(
                        "submitted reservation never settled: charged its full grant",
                        extra={"campaign": cid, "tick": tick, "amount": amount},
                    )
            pending = [
                cid for cid, page in zip(pending, pages, strict=True) if len(page) == SWEEP_PAGE and cid not in failed
            ]
        # The caller logs the outcome once (``sweeper.sweep_all``): this runs once per page of campaigns.
        return Swept(released, charged)

    # --- plumbing -----------------------------------------------------------------------------
    def _run(self, call: Call, campaign: str, tick: int | None = None) -> Any:
        with translated_errors(f"ledger {call.script}"):
            try:
                return self.scripts.run(call)
            except redis.ResponseError as exc:
                if is_refusal(str(exc)):
                    raise from_reply(str(exc), campaign, tick) from None
                raise

    def _run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in order, refusals and other error replies in place (``_refusal`` reads them).

        An error reply that is not a refusal (a key of the wrong type, a Lua error) concerns its own
        call only: it comes back as ``LedgerFault`` for that campaign, so one damaged campaign never
        fails the rest of the batch (whose calls ran). One that says the store is failing (read-only,
        out of memory) is raised as ``StoreUnavailable``.
        """
        with translated_errors(f"ledger batch of {len(calls)}"):
            replies = self.scripts.run_many(calls)
            for reply in replies:
                if isinstance(reply, UNAVAILABLE):
                    raise reply
        return replies


def queue_balance(pipe: Any, campaign: str) -> None:
    """Queue the read of ``campaign``'s balance on a caller's pipeline; ``Balance.from_row`` parses its reply.

    For a caller that reads the balance in the same round trip as other keys of the campaign.
    """
    pipe.hmget(keys.budget(campaign), Balance.FIELDS)


# --- arguments --------------------------------------------------------------------------------------
def _campaign_id(value: str) -> str:
    if not isinstance(value, str) or not keys.CAMPAIGN_ID_PATTERN.match(value):
        raise LedgerInputError.one("campaign", f"{value!r} is not a valid campaign id")
    return value


def _amount(value: int, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerInputError.one(field, f"must be an integer of micro-units, got {value!r}")
    if not 0 <= value <= MAX_MICROS:
        raise LedgerInputError.one(field, f"must be between 0 and {MAX_MICROS}, got {value}")
    return str(value)


def _tick(value: int) -> str:
    return _amount(value, "tick")


def _per_platform(values: Mapping[str, int], field: str) -> list[str]:
    if not isinstance(values, Mapping):
        raise LedgerInputError.one(field, f"must map platform ids to micro-units, got {type(values).__name__}")
    args: list[str] = []
    for platform, value in values.items():
        if not isinstance(platform, str) or not keys.PLATFORM_ID_PATTERN.match(platform):
            raise LedgerInputError.one(field, f"platform id {platform!r} is not a valid id")
        args += (platform, _amount(value, f"{field}.{platform}"))
    return args


def _reserve_call(campaign: str, tick: int, caps: Mapping[str, int]) -> Call:
    _campaign_id(campaign)
    args = _per_platform(caps, "caps")
    if not args:
        raise LedgerInputError.one("caps", "give at least one platform")
    return Call(
        "reserve",
        (
            keys.campaign(campaign),
            keys.budget(campaign),
            keys.reservation(campaign, tick),
            keys.reservations(campaign),
            keys.ledger(campaign),
            keys.history(campaign),
        ),
        (_tick(tick), *args),
    )


def _settle_call(campaign: str, tick: int, costs: Mapping[str, int]) -> Call:
    _campaign_id(campaign)
    args = _per_platform(costs, "costs")
    return Call(
        "settle",
        (
            keys.budget(campaign),
            keys.reservation(campaign, tick),
            keys.reservations(campaign),
            keys.ledger(campaign),
            keys.history(campaign),
        ),
        (_tick(tick), *args),
    )


def _submit_call(campaign: str, tick: int) -> Call:
    _campaign_id(campaign)
    return Call(
        "submit", (keys.budget(campaign), keys.reservation(campaign, tick), keys.history(campaign)), (_tick(tick),)
    )


def _release_call(campaign: str, tick: int, *, sweep: bool = False) -> Call:
    _campaign_id(campaign)
    return Call(
        "release",
        (keys.budget(campaign), keys.reservation(campaign, tick), keys.reservations(campaign), keys.ledger(campaign)),
        (_tick(tick), "sweep") if sweep else (_tick(tick),),
    )


# --- replies ----------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _refusal(reply: Any, campaign: str, tick: int) -> LedgerError | None:
    if not isinstance(reply, Exception):
        return None
    if isinstance(reply, redis.ResponseError) and is_refusal(str(reply)):
        return from_reply(str(reply), campaign, tick)
    log.error("ledger call failed: %s", reply, extra={"campaign": campaign, "tick": tick})
    return LedgerFault(f"campaign {campaign} tick {tick}: {type(reply).__name__}: {reply}")


def _grant(campaign: str, tick: int, reply: Sequence[Any], call: str = "reserve") -> Grant:
    grant = Grant(
        campaign, tick, _pairs(reply[3:]), int(reply[2]), ReservationState(_text(reply[1])), bool(int(reply[0]))
    )
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s",
            call,
            "replayed" if grant.replay else "done",
            extra={"campaign": campaign, "tick": tick, "granted": grant.granted, "remaining": grant.remaining},
        )
    return grant


def _settlement(campaign: str, tick: int, costs: Mapping[str, int], reply: Sequence[Any]) -> Settlement:
    replay, remaining, returned, extra, overdrawn, unreserved = (int(x) for x in reply[:6])
    result = Settlement(
        campaign, tick, _pairs(reply[6:]), returned, remaining, bool(replay), extra, overdrawn, bool(unreserved)
    )
    if not result.replay and result.extra:
        # Money the ledger never granted was spent: recorded in full, and said loudly.
        log.warning(
            "%s charged beyond its grant: %d micro-units (%d of them overdraft)",
            "unreserved settle" if result.unreserved else "settle",
            result.extra,
            result.overdrawn,
            extra={"campaign": campaign, "tick": tick, "spent": result.spent, "remaining": result.remaining},
        )
    elif result.replay and any(result.spent.get(p, 0) != cost for p, cost in costs.items()):
        # A redelivery with other figures: the first settlement stands, but say so.
        log.warning(
            "settle repeated with different costs; the first settlement stands",
            extra={"campaign": campaign, "tick": tick, "first": result.spent, "asked": dict(costs)},
        )
    elif log.isEnabledFor(logging.DEBUG):
        log.debug(
            "settle %s",
            "replayed" if result.replay else "charged",
            extra={"campaign": campaign, "tick": tick, "spent": result.spent, "remaining": result.remaining},
        )
    return result
