"""No charge is lost: a cost arriving for a tick whose submit was lost, or above its grant, is recorded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import keys
from common.fleet import metrics
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from common.ledger import ReservationState
from common.market.platforms import Order, PlatformAdapter
from common.models import Outcome
from common.money import to_micros_ceil
from tests.fleet import load_campaigns
from tests.ledger_helpers import audit


@dataclass
class LosesSubmits:
    """The platforms, behind a Redis failover that lost the evaluation's submits.

    Before the bids go out each reservation is put back to ``open``, as a replica that never got
    the submit would hold it, and the sweeper runs (a long platform call): it releases them all.
    """

    fleet: Fleet
    real: PlatformAdapter
    lost: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        # Called once per platform, the platforms at once: a campaign's reservation (all its
        # platforms) is lost at the first call that carries it.
        with self.lock:
            fresh = {o.bid.campaign for o in orders} - self.lost
            for cid in fresh:
                self.fleet.r.hset(keys.reservation(cid, tick), "state", ReservationState.OPEN.value)
            if fresh:
                assert self.fleet.ledger.sweep(sorted(fresh), tick + 1).released > 0
            self.lost |= fresh
        return self.real.submit(tick, orders)


def _spent(fleet: Fleet, ids: list[str]) -> int:
    return sum(fleet.ledger.balance(cid).spent for cid in ids)


def test_a_lost_submit_is_still_charged_and_alerted(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 6)
    fleet.platforms = LosesSubmits(fleet, fleet.platforms)
    assert begin(fleet, 1) is not None
    report = evaluate(fleet, ids, 1)
    assert report.placed, "the campaigns bid"
    charged = {p.bid.campaign for p in report.placed}
    # Every cost the platforms reported is in the ledger, although no reservation held it any more.
    assert _spent(fleet, ids) == report.spend_micros > 0
    for cid in ids:
        found = audit(fleet.r, cid, expect_open=False)
        if cid in charged:
            assert found.sums["charge"] + found.sums["overdraft"] == found.balance.spent
            assert fleet.r.hget(keys.reservation(cid, 1), "unreserved") == "1"
    snap = metrics.snapshot(fleet.r)
    assert snap.counter("ledger_unreserved_settles") == len(charged)
    assert snap.counter("ledger_charges_beyond_grant") == len(charged)
    assert snap.counter("ledger_beyond_grant_micros") == report.spend_micros


def test_a_platform_overshooting_its_cap_is_charged_in_full(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 6)
    fleet.platforms = Overshoots(fleet.platforms, 0.25)
    assert begin(fleet, 1) is not None
    report = evaluate(fleet, ids, 1)
    assert report.placed
    # Recorded as the platforms charged it, never clipped to the grant.
    assert _spent(fleet, ids) == sum(to_micros_ceil(p.outcome.cost) for p in report.placed)
    over = [p for p in report.placed if p.outcome.cost > p.bid.spend_cap]
    assert over
    for cid in ids:
        audit(fleet.r, cid, expect_open=False)
    snap = metrics.snapshot(fleet.r)
    assert snap.counter("ledger_charges_beyond_grant") == len({p.bid.campaign for p in over})
    assert snap.counter("ledger_unreserved_settles") == 0


@dataclass
class Overshoots:
    """Platforms that charge ``by`` currency units above every spend cap."""

    real: PlatformAdapter
    by: float

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome]:
        return [
            Outcome(order.bid.spend_cap + self.by, o.clicks, o.conversions, o.waste)
            for order, o in zip(orders, self.real.submit(tick, orders), strict=True)
        ]
