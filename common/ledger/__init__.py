"""The budget ledger: reserve, submit just before bidding, settle what was spent, release what was not bid.

Amounts are integer micro-units (``common.money`` converts). See docs/ledger.md.
"""

from common.ledger import compaction
from common.ledger.errors import (
    AdjustRefused,
    LedgerCorrupt,
    LedgerInputError,
    NoReservation,
    NotReservable,
    ReservationReleased,
    ReservationSettled,
    ReservationSubmitted,
    SettleRefused,
    TickCompacted,
    UnknownBudget,
)
from common.ledger.ledger import MAX_MICROS, Ledger, queue_balance
from common.ledger.records import Balance, Compacted, Grant, ReservationState, Settlement, Swept

__all__ = [
    "MAX_MICROS",
    "AdjustRefused",
    "Balance",
    "Compacted",
    "Grant",
    "Ledger",
    "LedgerCorrupt",
    "LedgerInputError",
    "NoReservation",
    "NotReservable",
    "ReservationReleased",
    "ReservationSettled",
    "ReservationState",
    "ReservationSubmitted",
    "SettleRefused",
    "Settlement",
    "Swept",
    "TickCompacted",
    "UnknownBudget",
    "compaction",
    "queue_balance",
]
