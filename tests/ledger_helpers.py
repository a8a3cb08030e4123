"""Helpers for the ledger tests: campaign records written by the store's own code, and a full audit.

The audit recomputes every figure of a budget from the ledger stream and the reservation records
and checks them against the budget hash, so a test can say "every invariant holds" in one line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from common import keys
from common.fleet.store import campaign_fields
from common.ledger import Balance
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


@dataclass
class Audit:
    balance: Balance
    open_ticks: list[int]  # unsettled: open or submitted
    sums: Counter[str]
    settled_by_tick: dict[int, int]
    states: dict[int, str]  # tick -> state of its reservation record
    charged_by_sweeper: set[int]  # ticks the sweeper settled at their full grant


def audit(client: Any, cid: str, *, expect_open: bool = True) -> Audit:
    """Check every ledger invariant of one campaign exactly; raises AssertionError naming the broken one.

    With ``expect_open=False`` there must be no unsettled (open or submitted) reservation and
    nothing reserved.
    """
    raw = {_text(k): int(v) for k, v in client.hgetall(keys.budget(cid)).items()}
    b = Balance(raw["budget"], raw["remaining"], raw["reserved"], raw["spent"])
    where = f"campaign {cid}: {b}"
    assert b.budget == b.remaining + b.reserved + b.spent, f"{where}: budget != remaining + reserved + spent"
    assert min(b.remaining, b.reserved, b.spent) >= 0, f"{where}: a negative figure"

    sums: Counter[str] = Counter()
    settled_by_tick: Counter[int] = Counter()
    swept_entries: set[int] = set()
    for _, fields in client.xrange(keys.ledger(cid)):
        entry = {_text(k): _text(v) for k, v in fields.items()}
        sums[entry["kind"]] += int(entry["amount"])
        if entry["kind"] == "settle":
            settled_by_tick[int(entry["tick"])] += int(entry["amount"])
            if entry.get("by") == "sweeper":
                swept_entries.add(int(entry["tick"]))
    assert b.spent == sums["settle"], f"{where}: spent != sum of settle entries {sums['settle']}"
    assert b.budget == sums["adjust"], f"{where}: budget != sum of adjust entries {sums['adjust']}"
    assert b.reserved == sums["reserve"] - sums["settle"] - sums["release"], f"{where}: reserved != stream {sums}"
    assert b.remaining == sums["adjust"] - sums["reserve"] + sums["release"], f"{where}: remaining != stream {sums}"

    open_ticks = sorted(int(t) for t in client.zrange(keys.reservations(cid), 0, -1))
    held = 0
    seen_open = set()
    states: dict[int, str] = {}
    charged: set[int] = set()
    for key in client.scan_iter(match=f"{keys.campaign_tag(cid)}:res:*", count=1000):
        record = {_text(k): _text(v) for k, v in client.hgetall(key).items()}
        tick = int(record["tick"])
        states[tick] = record["state"]
        granted = {k[2:]: int(v) for k, v in record.items() if k.startswith("g:")}
        assert sum(granted.values()) == int(record["granted"]), f"{where}: tick {tick} grants do not add up"
        assert settled_by_tick[tick] <= int(record["granted"]), f"{where}: tick {tick} settled more than granted"
        if record["state"] in ("open", "submitted"):
            held += int(record["granted"])
            seen_open.add(tick)
            assert settled_by_tick[tick] == 0, f"{where}: unsettled tick {tick} has settle entries"
        elif record["state"] == "settled":
            costs = {k[2:]: int(v) for k, v in record.items() if k.startswith("c:")}
            assert all(costs[p] <= granted[p] for p in granted), f"{where}: tick {tick} cost above grant"
            assert sum(costs.values()) == settled_by_tick[tick] == int(record["spent"]), f"{where}: tick {tick}"
            assert int(record["returned"]) == int(record["granted"]) - int(record["spent"]), f"{where}: tick {tick}"
            if record.get("charged_by") == "sweeper":
                charged.add(tick)
                assert costs == granted, f"{where}: tick {tick} charged by the sweeper below its grant"
        else:
            assert record["state"] == "released", f"{where}: tick {tick} has state {record['state']}"
            assert settled_by_tick[tick] == 0, f"{where}: released tick {tick} has settle entries"
    assert seen_open == set(open_ticks), f"{where}: open set {open_ticks} != unsettled records {sorted(seen_open)}"
    assert held == b.reserved, f"{where}: unsettled records hold {held}, budget says reserved {b.reserved}"
    assert swept_entries <= charged, f"{where}: sweeper settle entries for ticks {swept_entries - charged}"
    if not expect_open:
        assert not open_ticks and b.reserved == 0, f"{where}: reservations still unsettled at {open_ticks}"
    return Audit(b, open_ticks, sums, dict(settled_by_tick), states, charged)


def audit_all(client: Any, cids: list[str], *, expect_open: bool = True) -> dict[str, Audit]:
    return {cid: audit(client, cid, expect_open=expect_open) for cid in cids}


def snapshot(client: Any) -> dict[str, Any]:
    """Every key with its content (stream entries, sorted-set members with scores, hashes, sets,
    lists, strings), to show that a refused call wrote nothing."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(count=1000)):
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
