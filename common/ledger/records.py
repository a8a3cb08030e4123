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
    """A campaign's budget; ``budget == remaining + reserved + spent`` always."""

    budget: int
    remaining: int
    reserved: int
    spent: int

    # Fields of the budget hash (``common.keys.budget``), in the order of this record's fields.
    FIELDS: ClassVar[tuple[str, ...]] = ("budget", "remaining", "reserved", "spent")

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Balance | None:
        """The balance in an ``HMGET`` of ``FIELDS`` on the budget hash; None when no budget was opened.

        Queue that read with ``common.ledger.ledger.queue_balance``.
        """
        if row[0] is None:
            return None
        return cls(*(int(x) for x in row))


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

    ``spent`` is the cost per granted platform, ``returned`` what went back to remaining, and
    ``remaining`` the campaign's remaining budget afterwards: when it is 0 the caller may finish the
    campaign. ``replay`` is true when an earlier call had settled this tick (its result is returned).
    """

    campaign: str
    tick: int
    spent: dict[str, int]
    returned: int
    remaining: int
    replay: bool

    @property
    def total(self) -> int:
        return sum(self.spent.values())
