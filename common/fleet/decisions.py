"""One entry of the ``ce:decisions`` stream: a bid that reached a platform, and what it cost.

Evaluations append them; the API lists and streams them, the dashboard's trends sum them and the
backtest writes its decision log from them. Floats travel as ``repr``, which round-trips exactly:
the backtest's decision log is rebuilt from the stream byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common import keys
from common.redis_conn import Fields


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

    def to_fields(self) -> Fields:
        # The order is the stream's field order; ts to the millisecond is enough to place an entry.
        return {
            "ts": f"{self.ts:.3f}", "tick": str(self.tick), "campaign": self.campaign, "platform": self.platform,
            "bid": repr(self.bid), "spend_cap": repr(self.spend_cap),
            "cost": repr(self.cost), "clicks": repr(self.clicks), "conversions": repr(self.conversions),
            "waste": repr(self.waste),
        }  # fmt: skip

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> DecisionRecord:
        """Parse a stream entry; a missing or malformed field raises ``ValueError`` naming it."""
        try:
            return cls(
                ts=float(fields["ts"]),
                tick=int(fields["tick"]),
                campaign=fields["campaign"],
                platform=fields["platform"],
                bid=float(fields["bid"]),
                spend_cap=float(fields["spend_cap"]),
                cost=float(fields["cost"]),
                clicks=float(fields["clicks"]),
                conversions=float(fields["conversions"]),
                waste=float(fields["waste"]),
            )
        except KeyError as exc:
            raise ValueError(f"decision entry without {exc.args[0]!r}: {dict(fields)}") from None


def append(pipe: Any, record: DecisionRecord, maxlen: int) -> None:
    """Add ``record`` to the stream, capped near ``maxlen`` entries, on a pipeline or a client."""
    pipe.xadd(keys.DECISIONS, record.to_fields(), maxlen=maxlen, approximate=True)


def parse(entries: Iterable[tuple[str, Mapping[str, str]]]) -> list[tuple[str, DecisionRecord]]:
    """Entries as ``XRANGE`` or ``XREAD`` return them: (entry id, record), in the order given."""
    return [(entry_id, DecisionRecord.from_fields(fields)) for entry_id, fields in entries]
