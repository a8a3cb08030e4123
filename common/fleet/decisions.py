"""The ``ce:decisions`` stream: per campaign and tick that bid, the bids that reached a platform and
what each cost.

Evaluations append one entry per campaign that placed bids in a tick, its bids packed in one field;
the API lists and streams the bids, the dashboard's trends sum them and the backtest writes its
decision log from them. One entry per campaign rather than per bid is a third of the ``XADD``s and
arguments of the record phase (a campaign places about 2.5 bids a tick). Floats travel as ``repr``
(JSON keeps it), which round-trips exactly: the backtest's decision log is rebuilt from the stream
byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common import keys
from common.redis_conn import Fields

# A bid's figures in the entry's ``bids`` field, in this order, one JSON list per bid.
BID_FIELDS = ("platform", "bid", "spend_cap", "cost", "clicks", "conversions", "waste")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A placed bid and its outcome; ``ts`` is when its evaluation recorded it (unix seconds)."""

    ts: float
    tick: int
    campaign: str
    platform: str
    bid: float
    spend_cap: float
    cost: float
    clicks: float
    conversions: float
    waste: float


@dataclass(frozen=True, slots=True)
class CampaignDecision:
    """One stream entry: the bids one campaign placed in one tick, in the order it placed them.

    Every bid carries the entry's ``ts``, ``tick`` and ``campaign``; ``bids`` is never empty.
    """

    ts: float
    tick: int
    campaign: str
    bids: tuple[DecisionRecord, ...]

    def __post_init__(self) -> None:
        if not self.bids:
            raise ValueError(f"decision entry of {self.campaign!r} at tick {self.tick} without bids")
        for b in self.bids:
            if (b.ts, b.tick, b.campaign) != (self.ts, self.tick, self.campaign):
                raise ValueError(f"bid {b} is not of the entry ({self.ts}, {self.tick}, {self.campaign!r})")

    @classmethod
    def of(cls, bids: Sequence[DecisionRecord]) -> CampaignDecision:
        """The entry of ``bids``, which share their ``ts``, ``tick`` and ``campaign``."""
        if not bids:
            raise ValueError("a decision entry needs at least one bid")
        first = bids[0]
        return cls(first.ts, first.tick, first.campaign, tuple(bids))

    def to_fields(self) -> Fields:
        # The order is the stream's field order; ts to the millisecond is enough to place an entry.
        packed = [[b.platform, b.bid, b.spend_cap, b.cost, b.clicks, b.conversions, b.waste] for b in self.bids]
        return {
            "ts": f"{self.ts:.3f}",
            "tick": str(self.tick),
            "campaign": self.campaign,
            "bids": json.dumps(packed, separators=(",", ":")),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> CampaignDecision:
        """Parse a stream entry; a missing or malformed field raises ``ValueError`` naming it."""
        try:
            ts, tick, campaign = float(fields["ts"]), int(fields["tick"]), fields["campaign"]
            packed = json.loads(fields["bids"])
        except KeyError as exc:
            raise ValueError(f"decision entry without {exc.args[0]!r}: {dict(fields)}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"decision entry with malformed 'bids' ({exc}): {dict(fields)}") from None
        try:
            bids = tuple(
                DecisionRecord(ts, tick, campaign, str(platform), float(bid), float(cap), float(cost),
                               float(clicks), float(conversions), float(waste))
                for platform, bid, cap, cost, clicks, conversions, waste in packed
            )  # fmt: skip
        except (TypeError, ValueError):
            raise ValueError(f"decision entry with malformed 'bids' (want lists of {BID_FIELDS}): "
                             f"{dict(fields)}") from None  # fmt: skip
        return cls(ts, tick, campaign, bids)


def append(pipe: Any, entry: CampaignDecision, maxlen: int) -> None:
    """Add ``entry`` to the stream, capped near ``maxlen`` entries, on a pipeline or a client."""
    pipe.xadd(keys.DECISIONS, entry.to_fields(), maxlen=maxlen, approximate=True)


def parse(entries: Iterable[tuple[str, Mapping[str, str]]]) -> list[tuple[str, CampaignDecision]]:
    """Entries as ``XRANGE`` or ``XREAD`` return them: (entry id, entry), in the order given."""
    return [(entry_id, CampaignDecision.from_fields(fields)) for entry_id, fields in entries]


def bid_id(entry_id: str, index: int) -> str:
    """A bid's id: its entry's stream id and its place in the entry, ``<entry id>/<index>``."""
    return f"{entry_id}/{index}"


def split_bid_id(bid: str) -> tuple[str, int | None]:
    """``<entry id>/<index>`` as (entry id, index); a bare entry id gives (entry id, None)."""
    entry_id, sep, index = bid.partition("/")
    return entry_id, (int(index) if sep else None)


def bids(entries: Iterable[tuple[str, CampaignDecision]]) -> Iterator[tuple[str, DecisionRecord]]:
    """Each bid of ``entries`` with its id, in stream order (an entry's bids in placed order)."""
    for entry_id, entry in entries:
        for i, record in enumerate(entry.bids):
            yield bid_id(entry_id, i), record
