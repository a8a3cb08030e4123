"""The outcome of one campaign at one tick, as it is published to NATS (``common.fleet.publisher``).

Every campaign an evaluation decided on has one: the bids that reached a platform with their caps
and what they cost, or why it placed none. The ``ce:decisions`` stream keeps only the bids; this
message also says why a campaign stayed out, for consumers outside the fleet.

A message goes to the subject ``ce.decisions.<campaign>`` with the id ``<campaign>:<tick>``:
JetStream keeps the first message of an id and drops any repeat within its duplicate window, so a
publish retried after a lost acknowledgement is stored once. The body is JSON::

    {"campaign": "c1", "tick": 120, "ts": 1767225600.123,
     "bids": [{"platform": "search", "bid": 0.81, "spend_cap": 2.5, "cost": 2.1,
               "clicks": 2.6, "conversions": 0.13}]}
    {"campaign": "c2", "tick": 120, "ts": 1767225600.123, "bids": [], "reason": "budget spent"}

A campaign whose bids' outcomes come later (paper trading, a platform that reports late) is first
published with ``"reason": "outcome pending"``; once they are settled (``common.fleet.late``) a second
message, ``"late": true`` with the id ``<campaign>:<tick>:late``, gives its bids and what they cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.fleet.evaluation import GroupReport

SUBJECT_PREFIX = "ce.decisions"
# A campaign whose decision had bids but whose ledger grant was refused or came to nothing.
NOT_GRANTED = "no grant"
# A campaign whose bids were placed with outcomes to come (paper trading, a platform reporting later).
OUTCOME_PENDING = "outcome pending"


@dataclass(frozen=True, slots=True)
class PublishedBid:
    platform: str
    bid: float
    spend_cap: float
    cost: float
    clicks: float
    conversions: float


@dataclass(frozen=True, slots=True)
class OutcomeMessage:
    """One campaign's outcome at one tick; ``reason`` is set exactly when ``bids`` is empty."""

    campaign: str
    tick: int
    ts: float
    bids: tuple[PublishedBid, ...] = ()
    reason: str | None = None
    late: bool = False  # the settled outcomes of bids first published as pending

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.campaign}"

    @property
    def msg_id(self) -> str:
        """The ``Nats-Msg-Id``: one per (campaign, tick), whichever delivery of the evaluation sends it,
        and one more for the late outcomes of that (campaign, tick)."""
        return f"{self.campaign}:{self.tick}:late" if self.late else f"{self.campaign}:{self.tick}"

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "campaign": self.campaign,
            "tick": self.tick,
            "ts": round(self.ts, 3),
            "bids": [
                {"platform": b.platform, "bid": b.bid, "spend_cap": b.spend_cap, "cost": b.cost,
                 "clicks": b.clicks, "conversions": b.conversions}
                for b in self.bids
            ],
        }  # fmt: skip
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.late:
            doc["late"] = True
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> OutcomeMessage:
        """Parse a message body; a missing or malformed field raises ``ValueError`` naming it."""
        try:
            doc = json.loads(body)
            bids = tuple(_bid(b) for b in doc["bids"])
            reason = doc.get("reason")
            late = doc.get("late", False)
            if not isinstance(late, bool):
                raise ValueError(f"late is {late!r}, not a boolean")
            return cls(str(doc["campaign"]), int(doc["tick"]), float(doc["ts"]), bids, reason, late)
        except KeyError as exc:
            raise ValueError(f"outcome message without {exc.args[0]!r}: {body!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed outcome message ({exc}): {body!r}") from None


def _bid(doc: Mapping[str, Any]) -> PublishedBid:
    return PublishedBid(
        str(doc["platform"]), float(doc["bid"]), float(doc["spend_cap"]), float(doc["cost"]),
        float(doc["clicks"]), float(doc["conversions"]),
    )  # fmt: skip


def of_report(report: GroupReport, ts: float) -> Iterator[OutcomeMessage]:
    """The outcome of every campaign ``report`` decided on, bids in the order they were placed."""
    placed: dict[str, list[PublishedBid]] = {}
    for p in report.placed:
        b, out = p.bid, p.outcome
        placed.setdefault(b.campaign, []).append(
            PublishedBid(b.platform, b.bid, b.spend_cap, out.cost, out.clicks, out.conversions)
        )
    for cid, decision in report.decisions.items():
        bids = placed.get(cid)
        if bids and cid not in report.awaiting:
            yield OutcomeMessage(cid, report.tick, ts, tuple(bids))
        elif cid in report.awaiting:
            # Some of its bids' outcomes come later (fleet/late.py): /decisions shows them once settled.
            yield OutcomeMessage(cid, report.tick, ts, reason=OUTCOME_PENDING)
        else:
            reason = str(decision.reason) if decision.reason is not None else NOT_GRANTED
            yield OutcomeMessage(cid, report.tick, ts, reason=reason)
