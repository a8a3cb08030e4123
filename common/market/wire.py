"""The JSON a platform's bidding API speaks with ``CE_PLATFORM_ADAPTER=http`` (docs/operations.md).

``POST <endpoint>/bids`` takes a ``BidRequest`` (one tick's bids on that platform) and answers an
``OutcomeReply``: each bid's outcome by its idempotency key, ``cleared`` with what it cost and won,
or ``pending`` when the platform reports it later. ``POST <endpoint>/outcomes`` takes an
``OutcomeQuery`` (the keys still pending) and answers the same ``OutcomeReply``; a key the platform
never received is ``unknown``. A bid submitted again with the same key must get the first outcome
and never be charged twice. Any 4xx reply to ``/bids`` means nothing was placed; a 5xx, a time-out or
a reply that does not parse leaves the bids' fate to be asked for later.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.models import Outcome


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class BidItem(_Wire):
    key: str = Field(min_length=1, max_length=200, description="Idempotency key: <campaign>:<tick>:<platform>.")
    campaign: str
    bid: float = Field(ge=0, description="Most the campaign pays per click.")
    spend_cap: float = Field(ge=0, description="Most the bid may spend in the tick, in currency.")
    audience: float = Field(ge=0, description="The campaign's share of the platform's volume.")
    value_per_conversion: float = Field(ge=0)


class BidRequest(_Wire):
    tick: int = Field(ge=0)
    platform: str
    bids: list[BidItem]


class OutcomeItem(_Wire):
    key: str
    status: Literal["cleared", "pending", "unknown"]
    cost: float = Field(0.0, ge=0)
    clicks: float = Field(0.0, ge=0)
    conversions: float = Field(0.0, ge=0)
    waste: float = Field(0.0, ge=0)

    def outcome(self) -> Outcome | None:
        """The engine's outcome, or None while the platform has none to report."""
        if self.status != "cleared":
            return None
        return Outcome(self.cost, self.clicks, self.conversions, self.waste)

    @classmethod
    def cleared(cls, key: str, outcome: Outcome) -> OutcomeItem:
        return cls(
            key=key,
            status="cleared",
            cost=outcome.cost,
            clicks=outcome.clicks,
            conversions=outcome.conversions,
            waste=outcome.waste,
        )


class OutcomeReply(_Wire):
    outcomes: list[OutcomeItem]


class OutcomeQuery(_Wire):
    tick: int = Field(ge=0)
    platform: str
    keys: list[str]
