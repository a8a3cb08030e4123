"""Helpers for the ledger tests: campaign records written by the store's own code, and the full audit.

The audit (``common.ledger.audit``) recomputes every figure of a budget from the compacted totals,
the ledger stream and the reservation records and checks them against the budget hash, so a test
can say "every invariant holds" in one line.
"""

from __future__ import annotations

from typing import Any

from common import keys
from common.fleet.store import campaign_fields
from common.ledger import audit as ledger_audit
from common.ledger.audit import CampaignAudit
from common.models import CampaignSpec, CampaignStatus


def make_campaign(
    client: Any, cid: str, *, status: str = "active", start_tick: int = 0, end_tick: int | None = None
) -> None:
    """Write ``{c:<id>}:campaign`` as the store does, without opening its budget (the tests do that)."""
    spec = CampaignSpec(
        id=cid, budget=1.0, value_per_conversion=1.0, platforms={"p": 1.0}, start_tick=start_tick, end_tick=end_tick
    )
    client.hset(keys.campaign(cid), mapping=campaign_fields(spec, CampaignStatus(status)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def audit(client: Any, cid: str, *, expect_open: bool = True) -> CampaignAudit:
    """Check every ledger invariant of one campaign exactly (``common.ledger.audit``); raises
    AssertionError listing the broken ones.

    With ``expect_open=False`` there must be no unsettled (open or submitted) reservation and
    nothing reserved.
    """
    report = ledger_audit.audit(client, cid, expect_open=expect_open)
    assert report.ok, "\n".join(report.problems)
    return report


def audit_all(client: Any, cids: list[str], *, expect_open: bool = True) -> dict[str, CampaignAudit]:
    return {cid: audit(client, cid, expect_open=expect_open) for cid in cids}


# What a process writes about itself whatever it serves (its measured clock offset): not state.
TELEMETRY = {keys.CLOCK_OFFSETS}


def snapshot(client: Any) -> dict[str, Any]:
    """Every key with its content (stream entries, sorted-set members with scores, hashes, sets,
    lists, strings), to show that a refused call wrote nothing. Processes' telemetry is left out."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(count=1000)):
        if _text(key) in TELEMETRY:
            continue
        kind = _text(client.type(key))
        if kind == "hash":
            out[_text(key)] = client.hgetall(key)
        elif kind == "zset":
            out[_text(key)] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[_text(key)] = client.xrange(key)
        elif kind == "set":
            out[_text(key)] = sorted(client.smembers(key))
        elif kind == "list":
            out[_text(key)] = client.lrange(key, 0, -1)
        elif kind == "string":
            out[_text(key)] = client.get(key)
        else:
            raise AssertionError(f"{_text(key)}: no snapshot of a {kind}")
    return out
