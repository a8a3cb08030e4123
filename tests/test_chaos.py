"""The chaos run, short: a live fleet under every kind of fault once or more, then its books checked.

``make chaos`` runs the long version (1,000 ticks). This one runs the fewest ticks that fit every
kind of fault (``Plan.minimum_ticks``, about 100 s of ticks). Without root or ``ip netns`` the cut of
a host is left out and the report says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cli.chaos import Plan, run_chaos
from cli.chaos.faults import KINDS


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_fleet_under_faults_keeps_every_campaigns_books_exact(tmp_path: Path) -> None:
    plan = Plan(ticks=Plan().minimum_ticks(), seed=11)
    report = run_chaos(plan, tmp_path / "chaos", tmp_path / "chaos.json", Console(width=170))

    expected = set(KINDS) if "namespace" in report["hosts"] else set(KINDS) - {"cut_host"}
    assert set(report["by_kind"]) == expected, report["hosts"]
    # The money: every campaign's ledger exact and settled, none above its budget, every charge of the
    # platforms in the ledger (settled as charged, or charged in full by the sweeper).
    assert report["ledger"]["problems"] == []
    assert report["platforms"]["problems"] == []
    assert report["ok"]
    # The faults struck with bids out at least once, and the sweeper closed what they left.
    assert report["platforms"]["by_sweeper"] > 0
    assert any(f["detail"].get("struck") == "bids out" for f in report["faults"])
    # Duplicates were delivered and ignored; the second beat's ticks were refused by the claim.
    assert report["ticks"]["duplicates"] > 0
    assert report["ticks"]["claims_refused"] > 0
    # The fleet came back after every fault, and no process of it died on its own.
    assert [f["kind"] for f in report["faults"] if f["recovery_s"] is None] == []
    assert report["unexpected"] == []
    assert report["ticks"]["complete"] >= plan.ticks // 2
