"""What the ledger returns: balances, grants and settlements, all in integer micro-units."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ReservationState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class Balance:
    """A campaign's budget; ``budget == remaining + reserved + spent`` always."""

    budget: int
    remaining: int
    reserved: int
    spent: int


@dataclass(frozen=True, slots=True)
class Grant:
    """What ``reserve`` granted for one (campaign, tick), per platform in the order asked.

    ``replay`` is true when an earlier call had already reserved this tick: ``granted`` is that first
    grant and ``state`` says what became of it since (a released grant can no longer be spent).
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
        """True when bids may be placed against this grant."""
        return self.state is ReservationState.OPEN


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
