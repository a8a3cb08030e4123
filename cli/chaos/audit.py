"""The end-of-run checks of a chaos run: the ledger exact, and every platform charge in it.

``audit`` recomputes each campaign's figures from its ledger stream and reservation records and
compares them with its budget hash (the invariants of docs/ledger.md); ``reconcile`` compares what
the simulated platforms charged (``common.market.charges``) with what the ledger settled. Both
return a list of problems, each naming the campaign (and tick, platform) and the figures: empty
means exact. They read every record of the fleet, so they are for the end of a run, after the
final sweep. ``audit`` is the one entry point of the ledger checks, so that a ledger-wide audit of
the ledger's own can take its place.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common import keys
from common.ledger import Balance
from common.ledger import audit as ledger_audit
from common.market.charges import Charge, Key

PAGE = 500


@dataclass
class Reservation:
    """One reservation record as the ledger's scripts wrote it (``{c:<id>}:res:<tick>``)."""

    campaign: str
    tick: int
    state: str
    granted: dict[str, int]
    costs: dict[str, int]  # after settle
    by_sweeper: bool
    fields: dict[str, str] = field(repr=False)

    @classmethod
    def from_hash(cls, campaign: str, raw: dict[str, str]) -> Reservation:
        return cls(
            campaign, int(raw["tick"]), raw["state"],
            {k[2:]: int(v) for k, v in raw.items() if k.startswith("g:")},
            {k[2:]: int(v) for k, v in raw.items() if k.startswith("c:")},
            raw.get("charged_by") == "sweeper", raw,
        )  # fmt: skip


@dataclass
class Books:
    """Everything the ledger holds about the fleet's campaigns, read once."""

    balances: dict[str, Balance]
    entries: dict[str, list[dict[str, str]]]
    open_ticks: dict[str, list[int]]
    reservations: dict[str, dict[int, Reservation]]
    # What the ledger's own audit (common/ledger/audit.py) finds wrong, by campaign.
    ledger_problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def campaigns(self) -> list[str]:
        return sorted(self.balances)


def read_books(r: Any) -> Books:
    """Balances, streams, open sets and every reservation record of every campaign in ``ce:campaigns``."""
    cids = sorted(r.smembers(keys.CAMPAIGNS))
    pipe = r.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(keys.budget(cid))
        pipe.xrange(keys.ledger(cid))
        pipe.zrange(keys.reservations(cid), 0, -1)
    replies = pipe.execute()
    balances, entries, open_ticks = {}, {}, {}
    for i, cid in enumerate(cids):
        raw, stream, opened = replies[3 * i : 3 * i + 3]
        if not raw:
            continue
        balances[cid] = Balance(*(int(raw[f]) for f in ("budget", "remaining", "reserved", "spent")))
        entries[cid] = [dict(e) for _id, e in stream]
        open_ticks[cid] = sorted(int(t) for t in opened)
    reservations: dict[str, dict[int, Reservation]] = {cid: {} for cid in balances}
    names = [k for k in r.scan_iter(match="{c:*}:res:*", count=1000)]
    for start in range(0, len(names), PAGE):
        page = names[start : start + PAGE]
        pipe = r.pipeline(transaction=False)
        for name in page:
            pipe.hgetall(name)
        for name, raw in zip(page, pipe.execute(), strict=True):
            cid = name[len("{c:") : name.index("}")]
            if cid in reservations and raw:
                rec = Reservation.from_hash(cid, raw)
                reservations[cid][rec.tick] = rec
    ledger_problems = {a.campaign: a.problems for a in ledger_audit.audit_all(r, list(balances), expect_open=False)}
    return Books(balances, entries, open_ticks, reservations, ledger_problems)


def audit(r: Any, books: Books | None = None) -> list[str]:
    """Every ledger invariant of every campaign, after a final sweep (nothing may stay reserved)."""
    books = books or read_books(r)
    problems: list[str] = []
    for cid in books.campaigns:
        problems += _audit_campaign(cid, books)
    return problems


def _audit_campaign(cid: str, books: Books) -> list[str]:
    b = books.balances[cid]
    where = f"campaign {cid} ({b.budget} = {b.remaining} remaining + {b.reserved} reserved + {b.spent} spent)"
    out: list[str] = []
    if b.budget != b.remaining + b.reserved + b.spent:
        out.append(f"{where}: budget != remaining + reserved + spent")
    if min(b.remaining, b.reserved, b.spent) < 0:
        out.append(f"{where}: a negative figure")
    if b.spent > b.budget:
        out.append(f"{where}: spent more than its budget")
    if b.reserved != 0 or books.open_ticks[cid]:
        out.append(f"{where}: still reserved after the final sweep, open ticks {books.open_ticks[cid][:10]}")
    settled: Counter[int] = Counter()
    for e in books.entries[cid]:
        if e["kind"] == "settle":
            settled[int(e["tick"])] += int(e["amount"])
    # The ledger's own invariants (budget, entries, compacted history, overdraft): common/ledger/audit.py.
    out += [f"{where}: {problem}" for problem in books.ledger_problems.get(cid, [])]
    held = 0
    for tick, rec in books.reservations[cid].items():
        at = f"campaign {cid} tick {tick}"
        if sum(rec.granted.values()) != int(rec.fields["granted"]):
            out.append(f"{at}: grants {rec.granted} do not add up to {rec.fields['granted']}")
        if rec.state in ("open", "submitted"):
            held += sum(rec.granted.values())
        elif rec.state == "settled":
            over = {p: c for p, c in rec.costs.items() if c > rec.granted.get(p, 0)}
            if over:
                out.append(f"{at}: costs {over} above the grants {rec.granted}")
            if sum(rec.costs.values()) != settled[tick]:
                out.append(f"{at}: costs {rec.costs} != its settle entries {settled[tick]}")
            if rec.by_sweeper and rec.costs != rec.granted:
                out.append(f"{at}: charged by the sweeper at {rec.costs}, not its full grant {rec.granted}")
        elif settled[tick]:
            out.append(f"{at}: {rec.state} with settle entries of {settled[tick]}")
    if held != b.reserved:
        out.append(f"{where}: unsettled reservations hold {held}")
    return out


@dataclass
class Reconciliation:
    """The platforms' charges against the ledger, in micro-units."""

    problems: list[str]
    charged: int  # by the platforms
    settled: int  # by the evaluations, as the platforms charged
    swept: int  # charged by the sweeper at full grants
    swept_platform_charged: int  # what the platforms really charged on those
    charges: int  # lines of the platforms' logs
    by_sweeper: int  # reservations the sweeper charged
    released: int  # reservations the sweeper (or a release) gave back

    @property
    def overcharge(self) -> int:
        """What the full-grant charges took above what the platforms charged: lost to the campaigns."""
        return self.swept - self.swept_platform_charged


def reconcile(r: Any, charges: Iterable[Charge], books: Books | None = None) -> Reconciliation:
    """Each (campaign, tick, platform) a platform charged is in the ledger: settled at exactly that
    amount, or charged by the sweeper at its full grant (never less); and the ledger settled nothing
    a platform did not charge. A platform charging one key twice means two bids went out for it.
    """
    books = books or read_books(r)
    charged: dict[Key, int] = defaultdict(int)
    sources: dict[Key, list[str]] = defaultdict(list)
    for c in charges:
        charged[c.key] += c.micros
        sources[c.key].append(c.source)
    problems = [
        f"campaign {cid} tick {tick} platform {p}: charged twice by the platforms ({', '.join(src)})"
        for (cid, tick, p), src in sources.items()
        if len(src) > 1
    ]
    settled = swept = swept_real = by_sweeper = released = 0
    for cid in books.campaigns:
        for tick, rec in books.reservations[cid].items():
            released += rec.state == "released"
            if rec.state != "settled":
                continue
            by_sweeper += rec.by_sweeper
            for p, cost in rec.costs.items():
                real = charged.get((cid, tick, p), 0)
                at = f"campaign {cid} tick {tick} platform {p}"
                if rec.by_sweeper:
                    swept += cost
                    swept_real += real
                    if cost < real:
                        problems.append(f"{at}: the sweeper charged {cost}, below the platform's {real}")
                else:
                    settled += cost
                    if cost != real:
                        problems.append(f"{at}: settled {cost}, the platform charged {real}")
    for (cid, tick, p), amount in charged.items():
        found = books.reservations.get(cid, {}).get(tick)
        if found is None or found.state != "settled" or p not in found.costs:
            state = "no reservation" if found is None else f"reservation {found.state}, costs {found.costs}"
            problems.append(f"campaign {cid} tick {tick} platform {p}: the platform charged {amount}, "
                            f"the ledger has {state} ({', '.join(sources[cid, tick, p])})")  # fmt: skip
    return Reconciliation(
        problems, sum(charged.values()), settled, swept, swept_real, len(sources), by_sweeper, released
    )
