"""The budget ledger: reserve before bidding, settle what was spent, release what was not.

Amounts are integer micro-units (``common.money`` converts). See docs/ledger.md.
"""

from common.ledger.errors import (
    AdjustRefused,
    LedgerCorrupt,
    LedgerInputError,
    NoReservation,
    NotReservable,
    ReservationReleased,
    SettleRefused,
    UnknownBudget,
)
from common.ledger.ledger import MAX_MICROS, Ledger
from common.ledger.records import Balance, Grant, ReservationState, Settlement

__all__ = [
    "MAX_MICROS",
    "AdjustRefused",
    "Balance",
    "Grant",
    "Ledger",
    "LedgerCorrupt",
    "LedgerInputError",
    "NoReservation",
    "NotReservable",
    "ReservationReleased",
    "ReservationState",
    "SettleRefused",
    "Settlement",
    "UnknownBudget",
]
