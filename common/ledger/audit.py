"""The ledger audit: every invariant of a campaign's budget, recomputed from what the ledger stores.

A campaign's figures are read in one transaction (all its keys share a slot): the budget hash, the
compacted totals (``{c:<id>}:history``), the stream of movements since, the open set and the
reservation records above the watermark. Then, with ``S`` = the compacted totals plus the stream's
sums per entry kind:

- ``budget + overdraft == remaining + reserved + spent``, none negative;
- ``budget == S.adjust``; ``spent == S.settle + S.charge + S.overdraft``;
  ``reserved == S.reserve - S.settle - S.release``; ``overdraft == S.overdraft``;
- the unsettled records (open, submitted) hold exactly ``reserved`` and their ticks are exactly the
  open set; no record, and no unsettled tick, at or below the watermark;
- per record above the watermark, against the stream entries of its tick: an unsettled or released
  one has no settle entry, its reserve entries add up to its grant and its release entries to
  what it gave back; a settled one's costs add up to ``spent``, its ``extra`` (cost beyond the
  grants) equals its charge and overdraft entries, and ``granted == spent - extra + returned +
  released``; a reservation the sweeper charged has every cost at least its grant.

``audit`` returns the problems (empty when all hold), so tests assert on it and
``campaign-engine ledger audit`` prints them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from common import keys
from common.ledger.records import Balance
from common.redis_conn import Client, translated_errors

SPENT_KINDS = ("settle", "charge", "overdraft")
KINDS = ("adjust", "reserve", "release", *SPENT_KINDS)
# Reads of a campaign that changed between its scan and its transaction are retried this often.
ATTEMPTS = 50


@dataclass
class CampaignAudit:
    campaign: str
    balance: Balance | None
    watermark: int | None = None
    sums: Counter[str] = field(default_factory=Counter)  # compacted totals plus the stream, per kind
    open_ticks: list[int] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)  # tick -> state of its record (above the watermark)
    charged_by_sweeper: set[int] = field(default_factory=set)
    settled_by_tick: dict[int, int] = field(default_factory=dict)  # stream entries (spent kinds) per tick
    stream_entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    """A hash or a stream entry's fields; a cluster transaction returns them as a flat list."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {_text(k): _text(v) for k, v in pairs}


def record_ticks(client: Client, campaign: str) -> set[int]:
    """Ticks of the campaign's reservation records, found by scanning its keys."""
    prefix = f"{keys.campaign_tag(campaign)}:res:"
    pattern = "".join("\\" + ch if ch in "*?[]{}\\" else ch for ch in prefix) + "*"
    return {int(_text(k)[len(prefix) :]) for k in client.scan_iter(match=pattern, count=1000)}


def audit(client: Client, campaign: str, *, expect_open: bool = True) -> CampaignAudit:
    """Audit one campaign; ``expect_open=False`` also requires nothing reserved or unsettled.

    Safe while the ledger runs: on one server the budget hash is watched from before the scan of
    the records, and every call that makes a record writes it, so a snapshot is read again until
    no record appeared meanwhile (a cluster client cannot watch: audit it quiet).
    """
    with translated_errors("audit the ledger"):
        for _ in range(ATTEMPTS):
            pipe = client.pipeline(transaction=True)
            try:
                if isinstance(client, redis.Redis):
                    pipe.watch(keys.budget(campaign))
                scanned = record_ticks(client, campaign)
                pipe.multi()
                return _audit_once(pipe, campaign, scanned, expect_open)
            except redis.WatchError:
                continue
            finally:
                pipe.reset()
    return CampaignAudit(campaign, None, problems=[f"{campaign}: changed during each of {ATTEMPTS} reads"])


def audit_all(client: Client, campaigns: Iterable[str], *, expect_open: bool = True) -> Iterator[CampaignAudit]:
    for cid in campaigns:
        yield audit(client, cid, expect_open=expect_open)


def _audit_once(pipe: Any, cid: str, scanned: set[int], expect_open: bool) -> CampaignAudit:
    pipe.hgetall(keys.budget(cid))
    pipe.hgetall(keys.history(cid))
    pipe.xrange(keys.ledger(cid))
    pipe.zrange(keys.reservations(cid), 0, -1)
    ticks = sorted(scanned)
    for t in ticks:
        pipe.hgetall(keys.reservation(cid, t))
    raw_budget, raw_history, entries, open_raw, *records = pipe.execute()
    budget = {k: int(v) for k, v in _fields(raw_budget).items()}
    history = _fields(raw_history)
    if not budget:
        return CampaignAudit(cid, None, problems=[f"{cid}: no budget"])
    b = Balance(budget["budget"], budget["remaining"], budget["reserved"], budget["spent"], budget.get("overdraft", 0))
    mark = int(history["watermark"]) if "watermark" in history else None
    report = CampaignAudit(cid, b, mark, stream_entries=len(entries))
    problems = report.problems

    def problem(text: str) -> None:
        problems.append(f"{cid}: {text}")

    if b.budget + b.overdraft != b.remaining + b.reserved + b.spent:
        problem(f"budget + overdraft != remaining + reserved + spent ({b})")
    if min(b.remaining, b.reserved, b.spent, b.overdraft) < 0:
        problem(f"a negative figure ({b})")

    sums: Counter[str] = Counter({kind: int(history[kind]) for kind in KINDS if int(history.get(kind, 0))})
    by_tick: dict[int, Counter[str]] = {}
    swept: set[int] = set()
    for _, fields in entries:
        entry = _fields(fields)
        amount = int(entry["amount"])
        sums[entry["kind"]] += amount
        if entry["tick"] == "":
            continue
        tick = int(entry["tick"])
        by_tick.setdefault(tick, Counter())[entry["kind"]] += amount
        if entry["kind"] == "settle" and entry.get("by") == "sweeper":
            swept.add(tick)
    report.sums = sums
    spent_entries = sum(sums[k] for k in SPENT_KINDS)
    if b.budget != sums["adjust"]:
        problem(f"budget {b.budget} != adjust total {sums['adjust']}")
    if b.spent != spent_entries:
        problem(f"spent {b.spent} != settle + charge + overdraft totals {spent_entries}")
    if b.reserved != sums["reserve"] - sums["settle"] - sums["release"]:
        problem(f"reserved {b.reserved} != reserve - settle - release totals {dict(sums)}")
    if b.overdraft != sums["overdraft"]:
        problem(f"overdraft {b.overdraft} != overdraft total {sums['overdraft']}")

    report.open_ticks = sorted(int(t) for t in open_raw)
    held = 0
    unsettled = set()
    for tick, raw in zip(ticks, records, strict=True):
        if not raw:
            continue  # compacted between the scan and the read
        if mark is not None and tick <= mark:
            problem(f"record of tick {tick} at or below the watermark {mark}")
            continue
        held += _check_record(report, tick, _fields(raw), by_tick.get(tick))
        if report.states[tick] in ("open", "submitted"):
            unsettled.add(tick)
    for tick, kinds in by_tick.items():
        if (mark is None or tick > mark) and tick not in report.states:
            problem(f"stream entries {dict(kinds)} for tick {tick}, which has no record")
    report.settled_by_tick = {t: sum(c[k] for k in SPENT_KINDS) for t, c in by_tick.items()}
    if unsettled != set(report.open_ticks):
        problem(f"open set {report.open_ticks} != unsettled records {sorted(unsettled)}")
    if mark is not None and report.open_ticks and report.open_ticks[0] <= mark:
        problem(f"unsettled tick {report.open_ticks[0]} at or below the watermark {mark}")
    if held != b.reserved:
        problem(f"unsettled records hold {held}, the budget says reserved {b.reserved}")
    stray = {t for t in swept if mark is None or t > mark} - report.charged_by_sweeper
    if stray:
        problem(f"sweeper settle entries for ticks {sorted(stray)} it did not charge")
    if not expect_open and (report.open_ticks or b.reserved):
        problem(f"reservations still unsettled at {report.open_ticks}")
    return report


def _check_record(report: CampaignAudit, tick: int, record: dict[str, str], kinds: Counter[str] | None) -> int:
    """Check one record against its tick's stream entries; returns what it holds (0 unless unsettled)."""
    where = f"{report.campaign}: tick {tick}"
    kinds = kinds or Counter()
    state = record.get("state", "")
    report.states[tick] = state
    granted = {k[2:]: int(v) for k, v in record.items() if k.startswith("g:")}
    total = int(record.get("granted", 0))
    if sum(granted.values()) != total:
        report.problems.append(f"{where}: grants {granted} do not add up to {total}")
    settled = sum(kinds[k] for k in SPENT_KINDS)
    if kinds["reserve"] != total:
        report.problems.append(f"{where}: granted {total} but reserve entries {kinds['reserve']}")
    released = int(record.get("released", 0))
    if (state in ("open", "submitted") and kinds["release"]) or (state == "released" and kinds["release"] != released):
        report.problems.append(f"{where}: {state}, released {released}, release entries {kinds['release']}")
    if state in ("open", "submitted", "released"):
        if settled:
            report.problems.append(f"{where}: {state} but has settle entries {dict(kinds)}")
        return total if state != "released" else 0
    if state != "settled":
        report.problems.append(f"{where}: unknown state {state!r}")
        return 0
    costs = {k[2:]: int(v) for k, v in record.items() if k.startswith("c:")}
    spent, extra = int(record.get("spent", 0)), int(record.get("extra", 0))
    returned = int(record.get("returned", 0))
    if kinds["release"] != returned + released:
        report.problems.append(f"{where}: release entries {kinds['release']} != returned + released")
    if sum(costs.values()) != spent or settled != spent:
        report.problems.append(f"{where}: costs {costs}, spent {spent}, settle entries {settled} differ")
    if kinds["charge"] + kinds["overdraft"] != extra:
        report.problems.append(f"{where}: extra {extra} != charge + overdraft entries {dict(kinds)}")
    if spent - extra + returned + released != total:
        report.problems.append(f"{where}: spent - extra + returned + released != granted {total} ({record})")
    if record.get("charged_by") == "sweeper":
        report.charged_by_sweeper.add(tick)
        if any(costs.get(p, 0) < g for p, g in granted.items()):
            report.problems.append(f"{where}: charged by the sweeper below its grant")
    return 0
