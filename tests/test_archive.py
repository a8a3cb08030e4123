"""Finished and deleted campaigns: archived with their final balances, then removed (common/fleet/archive.py)."""

from __future__ import annotations

from pathlib import Path

from common import keys
from common.fleet import archive, maintenance
from common.fleet.archive import ArchivedCampaign
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from tests.fleet import load_campaigns
from tests.ledger_helpers import audit


def _archived(fleet: Fleet) -> dict[str, ArchivedCampaign]:
    entries = fleet.r.xrange(keys.ARCHIVE)
    return {e.campaign: e for e in (ArchivedCampaign.from_fields(f) for _, f in entries)}  # type: ignore[union-attr]


def _campaign_keys(fleet: Fleet, cid: str) -> list[str]:
    return list(fleet.r.scan_iter(match=f"{{c:{cid}}}:*"))


def test_a_finished_campaign_is_archived_after_its_retention(fleet: Fleet, market: Path) -> None:
    fleet.settings = fleet.settings.model_copy(update={"archive_after_ticks": 10})
    done, other = load_campaigns(fleet.r, market, 2)
    for t in range(3):
        assert begin(fleet, t) is not None
        evaluate(fleet, [done, other], t)
    spent = audit(fleet.r, done, expect_open=False).balance
    fleet.store.finish(done)
    assert maintenance.run(fleet, 11).archived == 0  # finished at tick 2: kept 10 ticks
    assert maintenance.run(fleet, 12).archived == 1
    entry = _archived(fleet)[done]
    assert (entry.status, entry.budget, entry.spent, entry.remaining) == (
        "finished",
        spent.budget,
        spent.spent,
        spent.remaining,
    )
    assert _campaign_keys(fleet, done) == [] and not fleet.r.sismember(keys.CAMPAIGNS, done)
    assert fleet.r.zcard(keys.ENDED) == 0
    assert _campaign_keys(fleet, other) and other not in _archived(fleet)


def test_a_deleted_campaign_leaves_its_archive_entry(fleet: Fleet, market: Path) -> None:
    (cid,) = load_campaigns(fleet.r, market, 1)
    assert begin(fleet, 0) is not None
    evaluate(fleet, [cid], 0)
    balance = fleet.ledger.balance(cid)
    fleet.store.delete(cid)
    entry = _archived(fleet)[cid]
    assert entry.status == "deleted" and entry.spent == balance.spent and entry.tick == 0
    assert '"id"' in entry.spec and _campaign_keys(fleet, cid) == []
    assert archive.due(fleet.r, 10**6, 0) == []
