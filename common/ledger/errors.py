"""Refusals of the ledger, one class per reason, all ``LedgerError`` (nothing was written).

The Lua scripts refuse with error replies ``LEDGER <code> <detail>``; ``from_reply`` turns one into
the matching class, naming the campaign and tick. Bad arguments are also ``InvalidInput`` and
missing objects ``NotFound``, so an HTTP layer can map them without knowing the ledger.
"""

from __future__ import annotations

import re

from common.errors import Conflict, InvalidInput, LedgerError, NotFound


class LedgerInputError(LedgerError, InvalidInput):
    """An argument was refused before any money moved; ``errors`` lists (field, reason)."""


class UnknownBudget(LedgerError, NotFound):
    """The campaign has no budget: ``open`` was never called for it."""


class NotReservable(LedgerError):
    """The campaign is not active, the tick is outside its flight, or its record is missing or bad."""


class NoReservation(LedgerError, NotFound):
    """Settle or submit of a tick that was never reserved."""


class ReservationReleased(LedgerError, Conflict):
    """Settle or submit of a reservation that was already released (by ``release`` or the sweeper).

    Refused by ``submit``, it means: place no bid, the grant is back in remaining.
    """


class ReservationSettled(LedgerError, Conflict):
    """Submit of a reservation that is already settled: it holds nothing, so no bid may be placed."""


class ReservationSubmitted(LedgerError, Conflict):
    """Release of a submitted reservation: its bids went out, only settle (or the sweeper's charge) closes it."""


class SettleRefused(LedgerError):
    """A cost exceeds what was granted on its platform, or names a platform that was not reserved."""


class TickCompacted(LedgerError, Conflict):
    """An operation on a tick at or below the campaign's watermark: it was closed and compacted.

    Everything there is done (settled, released, or charged in full by the sweeper), so the call is a
    late repeat: nothing is reserved, submitted, settled or released again.
    """


class AdjustRefused(LedgerError):
    """A budget change that would go below spent + reserved, overflow, or reuse an operation id."""


class LedgerCorrupt(LedgerError):
    """The stored figures contradict each other; a script found it and wrote nothing."""


_BY_CODE: dict[str, type[LedgerError]] = {
    "no_budget": UnknownBudget,
    "not_reservable": NotReservable,
    "bad_campaign": NotReservable,
    "no_reservation": NoReservation,
    "released": ReservationReleased,
    "settled": ReservationSettled,
    "submitted": ReservationSubmitted,
    "over_grant": SettleRefused,
    "unknown_platform": SettleRefused,
    "below_committed": AdjustRefused,
    "too_large": AdjustRefused,
    "op_reused": AdjustRefused,
    "corrupt": LedgerCorrupt,
    "compacted": TickCompacted,
}

# Redis appends where an error() was raised: " script: <sha>, on @user_script:<line>."
_SCRIPT_SUFFIX = re.compile(r"\s+script: [0-9a-f]{40}.*$", re.DOTALL)


def is_refusal(message: str) -> bool:
    return message.startswith("LEDGER ")


def from_reply(message: str, campaign: str, tick: int | None = None) -> LedgerError:
    """The ``LedgerError`` for a script's ``LEDGER <code> <detail>`` error reply."""
    body = _SCRIPT_SUFFIX.sub("", message).removeprefix("LEDGER ")
    code, _, detail = body.partition(" ")
    if code == "bad_input":
        field, _, reason = detail.partition(": ")
        return LedgerInputError([(field, reason)])
    where = f"campaign {campaign}" if tick is None else f"campaign {campaign} tick {tick}"
    error = _BY_CODE.get(code, LedgerError)(f"{where}: {detail}")
    error.reason = detail
    return error
