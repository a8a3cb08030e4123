"""Concurrency hammer: several processes on ~50 campaigns, some killed between reserve or submit and settle.

Workers bid as evaluations do (reserve, submit, spend, settle) amid random and duplicate calls.
While they run, the test sweeps at random cut-offs, compacts every campaign up to a rising tick,
and audits consistent snapshots of campaigns (``common.ledger.audit``: every invariant, compacted
totals included). Afterwards, and after a final sweep and compaction, every invariant must hold
exactly, every settlement a worker was told about must be in the ledger, and for every reservation
a worker submitted and spent on, the ledger must have charged at least what it spent, whether the
worker settled or was killed first: per record above the watermark, in total for the ticks
compacted below it.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from common import keys
from common.ledger import Compacted, Ledger, Swept, compaction
from common.ledger import audit as ledger_audit
from common.ledger.audit import CampaignAudit
from tests import ledger_hammer
from tests.ledger_helpers import audit_all, make_campaign

CAMPAIGNS = [f"h{i:02d}" for i in range(50)]
WORKERS = 4
# Killed while parked: after reserve (left open), and after submit and spending (left submitted).
PARKS = ("reserved", "submitted", "submitted")
OPS = 1_500
# Compaction rises to this tick during the run: below it, ticks are refused and only totals are kept.
COMPACT_UPTO = 30


def _compacted_charges(found: CampaignAudit) -> int:
    """What the ledger charged for the ticks at or below the watermark: folded totals and stream entries."""
    assert found.watermark is not None
    in_stream = sum(v for t, v in found.settled_by_tick.items() if t <= found.watermark)
    in_totals = sum(found.sums[k] for k in ledger_audit.SPENT_KINDS) - sum(found.settled_by_tick.values())
    return in_totals + in_stream


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_hammer_with_killed_workers(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    rng = random.Random(20240601)
    ledger = Ledger(r)
    for cid in CAMPAIGNS:
        make_campaign(r, cid)
        ledger.open(cid, rng.randint(20_000, 400_000))

    ctx = multiprocessing.get_context("spawn")
    procs = []
    for n in range(WORKERS + len(PARKS)):
        park = (rng.randint(50, 400), PARKS[n - WORKERS]) if n >= WORKERS else None
        acks, spends = str(tmp_path / f"acks-{n}.txt"), str(tmp_path / f"spent-{n}.txt")
        proc = ctx.Process(
            target=ledger_hammer.run, args=(redis_url, 1000 + n, CAMPAIGNS, OPS, acks, spends, park), daemon=True
        )
        proc.start()
        procs.append(proc)
    workers, victims = procs[:WORKERS], procs[WORKERS:]
    randomly_killed = workers[0]
    kill_at = time.monotonic() + rng.uniform(1.5, 3.0)

    deadline = time.monotonic() + 75
    parked: dict[int, tuple[str, int, str]] = {}
    checks = rounds = 0
    swept_midrun = Swept()
    compacted_midrun = Compacted()
    try:
        while any(p.is_alive() for p in workers) or len(parked) < len(PARKS):
            assert time.monotonic() < deadline, "hammer workers did not finish in time"
            crashed = [p.exitcode for p in workers[1:] + victims if p.exitcode not in (None, 0, -signal.SIGKILL)]
            assert not crashed, f"a hammer worker failed (exit codes {crashed}); see its traceback above"
            for announced in r.lrange(ledger_hammer.PARKED, 0, -1):
                seed, where, at_tick, kind = str(announced).split()
                if int(seed) not in parked:
                    parked[int(seed)] = (where, int(at_tick), kind)
                    os.kill(victims[int(seed) - 1000 - WORKERS].pid, signal.SIGKILL)  # type: ignore[arg-type]
            if randomly_killed.is_alive() and time.monotonic() > kill_at:
                os.kill(randomly_killed.pid, signal.SIGKILL)  # type: ignore[arg-type]
            swept_midrun += ledger.sweep(CAMPAIGNS, rng.randrange(ledger_hammer.TICKS))
            rounds += 1
            compacted_midrun += compaction.compact(ledger, CAMPAIGNS, min(COMPACT_UPTO, rounds // 4))
            for cid in rng.sample(CAMPAIGNS, 5):
                snapshot = ledger_audit.audit(r, cid)
                assert snapshot.ok, snapshot.problems
                checks += 1
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)

    assert [p.exitcode for p in victims] == [-signal.SIGKILL] * len(PARKS)
    assert all(p.exitcode == 0 for p in workers[1:]), [p.exitcode for p in workers]
    assert checks > 0
    assert swept_midrun.released > 0 and swept_midrun.charged > 0, swept_midrun
    # Ticks come at random, so a tick above the watermark is soon met in the stream: few entries fold.
    assert compacted_midrun.records > 100 and compacted_midrun.entries > 20, compacted_midrun

    # Each victim's reservation is where it left it: open after reserve, submitted after submit.
    before_sweep = audit_all(r, CAMPAIGNS)
    assert sorted(kind for _, _, kind in parked.values()) == sorted(PARKS)
    for where, at, kind in parked.values():
        assert before_sweep[where].states[at] == ("open" if kind == "reserved" else "submitted")
    final = ledger.sweep(CAMPAIGNS, ledger_hammer.TICKS + 10)
    assert final.released >= PARKS.count("reserved") and final.charged >= PARKS.count("submitted"), final
    compaction.compact(ledger, CAMPAIGNS, COMPACT_UPTO)
    after = audit_all(r, CAMPAIGNS, expect_open=False)
    assert sum(a.balance.spent for a in after.values()) > 0
    marks = {cid: a.watermark for cid, a in after.items()}
    assert all(m == COMPACT_UPTO for m in marks.values()), marks
    for where, at, kind in parked.values():
        assert after[where].states[at] == ("released" if kind == "reserved" else "settled")
        assert (at in after[where].charged_by_sweeper) == (kind == "submitted")

    # Every settlement a worker was told about is in the ledger, with the amount it was told (the last
    # one: a late settle above a sweeper's charge adds to it). At or below the watermark, in total.
    told: dict[tuple[str, int], int] = {}
    for path in tmp_path.glob("acks-*.txt"):
        for line in path.read_text().splitlines():
            cid, tick, total = line.split()
            told[(cid, int(tick))] = max(told.get((cid, int(tick)), 0), int(total))
    assert len(told) > 100
    below: Counter[str] = Counter()
    for (cid, tick), total in told.items():
        if tick <= COMPACT_UPTO:
            below[cid] += total
            continue
        record = r.hgetall(keys.reservation(cid, tick))
        assert record["state"] == "settled" and int(record["spent"]) == total, (cid, tick, total, record)
    for cid, total in below.items():
        assert _compacted_charges(after[cid]) >= total, (cid, total, after[cid])

    # Whatever a worker spent on a submitted reservation, the ledger charged at least that: exactly it
    # when the worker's settle came first, the whole grant when the sweeper did.
    outcome: Counter[str] = Counter()
    spent_below: Counter[str] = Counter()
    for path in tmp_path.glob("spent-*.txt"):
        for line in path.read_text().splitlines():
            cid, tick, spent = line.split()
            if int(tick) <= COMPACT_UPTO:
                spent_below[cid] += int(spent)
                outcome["compacted"] += 1
                continue
            record = r.hgetall(keys.reservation(cid, int(tick)))
            assert record["state"] == "settled", (line, record)
            assert int(record["spent"]) >= int(spent), (line, record)
            if record.get("charged_by") == "sweeper":
                assert int(record["spent"]) >= int(record["granted"]), (line, record)
                outcome["charged in full"] += 1
            else:
                assert int(record["spent"]) == int(spent), (line, record)
                outcome["settled"] += 1
    for cid, total in spent_below.items():
        assert _compacted_charges(after[cid]) >= total, (cid, total)
    assert outcome["settled"] > 20 and outcome["compacted"] > 100, outcome
    assert outcome["charged in full"] >= PARKS.count("submitted"), outcome
