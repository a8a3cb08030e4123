"""The checks a chaos run ends with: each finds the fault it is for, and none when the books are exact.

Real Redis and the ledger's own scripts write the books; the platforms' charges are written by the
``ChargeLog`` adapter the workers use, or as its lines when a test plants a discrepancy.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from cli.chaos.audit import audit, reconcile
from common import keys
from common.ledger import Ledger
from common.market.charges import Charge, ChargeLog, billed_micros, read_charges
from common.market.platforms import Order, SimulatedPlatforms
from common.market.scenario import Scenario
from common.models import Bid, CampaignSpec
from tests.ledger_helpers import make_campaign

BUDGET = 10_000_000


def _books(r: redis.Redis) -> tuple[Ledger, list[Charge]]:
    """Two campaigns over three ticks: settled as charged, one settle lost (charged in full by the
    sweeper), one reservation never submitted (released by the sweeper)."""
    ledger = Ledger(r)
    charges = []
    for cid in ("k1", "k2"):
        make_campaign(r, cid)
        r.sadd(keys.CAMPAIGNS, cid)
        ledger.open(cid, BUDGET)
        for tick in range(3):
            ledger.reserve(cid, tick, {"search": 1_000, "social": 500})
            if cid == "k2" and tick == 2:
                continue  # never submitted: no bid
            ledger.submit(cid, tick)
            costs = {"search": 700 + tick, "social": 0}
            charges.append(Charge(cid, tick, "search", costs["search"], f"host/charges-h-{tick}.jsonl"))
            if cid == "k1" and tick == 1:
                continue  # bids out, the settle lost: the sweeper charges the full grant
            ledger.settle(cid, tick, costs)
    swept = ledger.sweep(["k1", "k2"], 3)
    assert (swept.charged, swept.released) == (1, 1)
    return ledger, charges


def test_exact_books_have_no_problem(r: redis.Redis) -> None:
    _, charges = _books(r)
    assert audit(r) == []
    found = reconcile(r, charges)
    assert found.problems == []
    assert (found.by_sweeper, found.released) == (1, 1)
    assert found.swept == 1_500 and found.swept_platform_charged == 701
    assert found.overcharge == 799
    assert found.charged == sum(c.micros for c in charges) == found.settled + 701


def test_a_charge_the_ledger_never_recorded_is_named(r: redis.Redis) -> None:
    _, charges = _books(r)
    # A platform charged for the tick whose reservation was released: money spent outside the books.
    lost = Charge("k2", 2, "search", 300, "ns/charges-h-9.jsonl")
    problems = reconcile(r, [*charges, lost]).problems
    assert problems == [
        "campaign k2 tick 2 platform search: the platform charged 300, the ledger has reservation released, "
        "costs {} (ns/charges-h-9.jsonl)"
    ]


def test_a_settle_other_than_the_charge_and_a_double_charge_are_named(r: redis.Redis) -> None:
    _, charges = _books(r)
    changed = [Charge(c.campaign, c.tick, c.platform, c.micros + 1, c.source) if c.key == ("k1", 0, "search")
               else c for c in charges]  # fmt: skip
    twice = Charge("k2", 0, "search", 0, "b/charges-h-2.jsonl")
    problems = reconcile(r, [*changed, twice]).problems
    assert any("k2 tick 0 platform search: charged twice" in p for p in problems), problems
    assert "campaign k1 tick 0 platform search: settled 700, the platform charged 701" in problems
    # A sweeper charge below what the platform took would lose money: named too.
    above = [Charge("k1", 1, "search", 1_001, "a/charges-h-1.jsonl") if c.key == ("k1", 1, "search") else c
             for c in charges]  # fmt: skip
    assert reconcile(r, above).problems == ["campaign k1 tick 1 platform search: the sweeper charged 1000, below the "
                                            "platform's 1001"]  # fmt: skip


def test_the_audit_names_a_broken_invariant(r: redis.Redis) -> None:
    ledger, _ = _books(r)
    ledger.reserve("k1", 5, {"search": 100})
    r.hincrby(keys.budget("k2"), "spent", 1)
    problems = audit(r)
    assert any(p.startswith("campaign k1") and "still reserved after the final sweep, open ticks [5]" in p
               for p in problems), problems  # fmt: skip
    assert any(p.startswith("campaign k2") and "budget != remaining + reserved + spent" in p for p in problems)
    assert any(p.startswith("campaign k2") and "!= settle + charge + overdraft totals" in p for p in problems), problems


def test_charge_log_records_what_the_platforms_billed(market: Path, tmp_path: Path) -> None:
    scenario = Scenario.load(market)
    platform = next(iter(scenario.platforms))
    spec = CampaignSpec(id="x", budget=100.0, value_per_conversion=5.0, platforms={platform: 1.0}, end_tick=10)
    orders = [Order(Bid("x", platform, 50.0, cap), spec) for cap in (0.25, 0.000001, 0.0)]
    log = ChargeLog(SimulatedPlatforms(scenario), tmp_path / "charges", host="h")
    outcomes = log.submit(3, orders)
    assert outcomes == SimulatedPlatforms(scenario).submit(3, orders)
    (path,) = (tmp_path / "charges").iterdir()
    with path.open("a") as f:
        f.write('{"campaign": "x", "tick"')  # a line torn by a kill mid-write
    found = read_charges(tmp_path)
    expected = [billed_micros(o, out) for o, out in zip(orders, outcomes, strict=True)]
    assert [c.micros for c in found] == [m for m in expected if m > 0]
    assert expected[0] <= 250_000 and expected[1] <= 1
    assert all(c.key == ("x", 3, platform) and c.source == f"charges/{path.name}" for c in found)
    assert json.loads(path.read_text().splitlines()[0])["tick"] == 3
