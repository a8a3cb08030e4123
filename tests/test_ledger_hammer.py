"""Concurrency hammer: several processes on ~50 campaigns, some killed between reserve or submit and settle.

Workers bid as evaluations do (reserve, submit, spend, settle) amid random and duplicate calls.
While they run, the test sweeps at random cut-offs and checks atomic snapshots of every budget
against its stream. Afterwards, and after a final sweep, every invariant must hold exactly, every
settlement a worker was told about must be in the ledger, and for every reservation a worker
submitted and spent on, the ledger must have charged at least what it spent, whether the worker
settled or was killed first.
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
from common.ledger import Ledger, Swept
from tests import ledger_hammer
from tests.ledger_helpers import audit_all, make_campaign

CAMPAIGNS = [f"h{i:02d}" for i in range(50)]
WORKERS = 4
# Killed while parked: after reserve (left open), and after submit and spending (left submitted).
PARKS = ("reserved", "submitted", "submitted")
OPS = 1_500


def _snapshot_holds(client: redis.Redis, cid: str) -> None:
    """budget = remaining + reserved + spent and the stream agrees, read atomically mid-run."""
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(keys.budget(cid))
    pipe.xrange(keys.ledger(cid))
    raw, entries = pipe.execute()
    b = {k: int(v) for k, v in raw.items()}
    sums: Counter[str] = Counter()
    for _, fields in entries:
        sums[fields["kind"]] += int(fields["amount"])
    assert b["budget"] == b["remaining"] + b["reserved"] + b["spent"], (cid, b)
    assert min(b.values()) >= 0, (cid, b)
    assert b["spent"] == sums["settle"], (cid, b, sums)
    assert b["reserved"] == sums["reserve"] - sums["settle"] - sums["release"], (cid, b, sums)
    assert b["budget"] == sums["adjust"], (cid, b, sums)


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
    checks = 0
    swept_midrun = Swept()
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
            for cid in rng.sample(CAMPAIGNS, 5):
                _snapshot_holds(r, cid)
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

    # Each victim's reservation is where it left it: open after reserve, submitted after submit.
    before_sweep = audit_all(r, CAMPAIGNS)
    assert sorted(kind for _, _, kind in parked.values()) == sorted(PARKS)
    for where, at, kind in parked.values():
        assert before_sweep[where].states[at] == ("open" if kind == "reserved" else "submitted")
    final = ledger.sweep(CAMPAIGNS, ledger_hammer.TICKS + 10)
    assert final.released >= PARKS.count("reserved") and final.charged >= PARKS.count("submitted"), final
    after = audit_all(r, CAMPAIGNS, expect_open=False)
    assert sum(a.balance.spent for a in after.values()) > 0
    for where, at, kind in parked.values():
        assert after[where].states[at] == ("released" if kind == "reserved" else "settled")
        assert (at in after[where].charged_by_sweeper) == (kind == "submitted")

    # Every settlement a worker was told about is in the ledger, with the amount it was told.
    told = 0
    for path in tmp_path.glob("acks-*.txt"):
        for line in path.read_text().splitlines():
            cid, tick, total = line.split()
            record = r.hgetall(keys.reservation(cid, int(tick)))
            assert record["state"] == "settled" and int(record["spent"]) == int(total), (line, record)
            told += 1
    assert told > 100

    # Whatever a worker spent on a submitted reservation, the ledger charged at least that: exactly it
    # when the worker's settle came first, the whole grant when the sweeper did.
    outcome: Counter[str] = Counter()
    for path in tmp_path.glob("spent-*.txt"):
        for line in path.read_text().splitlines():
            cid, tick, spent = line.split()
            record = r.hgetall(keys.reservation(cid, int(tick)))
            assert record["state"] == "settled", (line, record)
            assert int(record["spent"]) >= int(spent), (line, record)
            if record.get("charged_by") == "sweeper":
                assert int(record["spent"]) == int(record["granted"]), (line, record)
                outcome["charged in full"] += 1
            else:
                assert int(record["spent"]) == int(spent), (line, record)
                outcome["settled"] += 1
    assert outcome["settled"] > 100 and outcome["charged in full"] >= PARKS.count("submitted"), outcome
