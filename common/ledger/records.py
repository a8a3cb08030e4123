"""What the ledger returns: balances, grants and settlements, all in integer micro-units."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class ReservationState(StrEnum):
    """Life of one (campaign, tick) reservation: open -> submitted -> settled, or open -> released.

    ``open``: granted, no bid placed yet; settle or release closes it. ``submitted``: ``submit``
    marked it just before its bids went out; a platform may have charged up to each grant, so it is
    never released: settle closes it, or the sweeper charges every grant in full.
    """

    OPEN = "open"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Balance:
    """A campaign's budget; ``budget + overdraft == remaining + reserved + spent`` always.

    ``overdraft`` is what was charged beyond the money there was: costs above their grants or
    without a reservation that ``remaining`` could not cover (docs/ledger.md). It is 0 unless a
    platform charged more than the ledger let it.
    """

    budget: int
    remaining: int
    reserved: int
    spent: int
    overdraft: int = 0

    # Fields of the budget hash (``common.keys.budget``), in the order of this record's fields.
    FIELDS: ClassVar[tuple[str, ...]] = ("budget", "remaining", "reserved", "spent", "overdraft")

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Balance | None:
        """The balance in an ``HMGET`` of ``FIELDS`` on the budget hash; None when no budget was opened.

        Queue that read with ``common.ledger.ledger.queue_balance``.
        """
        if row[0] is None:
            return None
        # A budget written before the overdraft existed has no such field: none was charged.
        return cls(*(int(x or 0) for x in row))


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``reserve`` granted for one (campaign, tick), per platform in the order asked.

    ``reserve`` returns it with state ``open``; ``submit`` returns the same grant with state
    ``submitted``. ``replay`` is true when an earlier call had already made the grant (reserve) or
    submitted it (submit): ``granted`` is the first grant and ``state`` says what became of it since.
    ``remaining`` is the campaign's remaining budget after the call.
    """

    campaign: str
    tick: int
    granted: dict[str, int]
    remaining: int
    state: ReservationState
    replay: bool

    @property
    def total(self) -> int:
        return sum(self.granted.values())

    @property
    def usable(self) -> bool:
        """True when bids may be placed against this grant: only a fresh reply of ``submit``.

        A grant from ``reserve`` is not usable yet (submit it first); a replayed submit is not
        usable either: an earlier call submitted it and its bids may already be out.
        """
        return self.state is ReservationState.SUBMITTED and not self.replay


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep closed: open reservations ``released``, submitted ones ``charged`` in full."""

    released: int = 0
    charged: int = 0

    @property
    def closed(self) -> int:
        return self.released + self.charged

    def __add__(self, other: Swept) -> Swept:
        return Swept(self.released + other.released, self.charged + other.charged)


@dataclass(frozen=True, slots=True)
class Settlement:
    """What ``settle`` charged for one (campaign, tick).

    ``spent`` is the cost per platform (granted ones in grant order, then any charged without a
    grant), ``returned`` what went back to remaining, and ``remaining`` the campaign's remaining
    budget afterwards: when it is 0 the caller may finish the campaign. ``replay`` is true when an
    earlier call had settled this tick (its result is returned).

    ``extra`` is what the tick cost beyond its grants (a platform overshooting a cap, or a cost
    with no reservation: ``unreserved``), charged in full; ``overdrawn`` the part of it this call
    could not take from remaining and added to the budget's overdraft. Both are 0 in a normal
    settle; callers raise an alert when they are not.
    """

    campaign: str
    tick: int
    spent: dict[str, int]
    returned: int
    remaining: int
    replay: bool
    extra: int = 0
    overdrawn: int = 0
    unreserved: bool = False

    @property
    def total(self) -> int:
        return sum(self.spent.values())


@dataclass(frozen=True, slots=True)
class Compacted:
    """What compaction removed: reservation records below the watermarks and folded stream entries."""

    records: int = 0
    entries: int = 0
    moved: int = 0  # campaigns another compaction changed meanwhile (left for the next call)

    def __add__(self, other: Compacted) -> Compacted:
        return Compacted(self.records + other.records, self.entries + other.entries, self.moved + other.moved)
