"""Concurrency hammer: several processes on ~50 campaigns, some killed between reserve and settle.

While they run, the test sweeps at random cut-offs and checks atomic snapshots of every budget
against its stream. Afterwards, and after a final sweep, every invariant must hold exactly and
every settlement a worker was told about must be in the ledger.
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
from common.ledger import Ledger
from tests import ledger_hammer
from tests.ledger_helpers import audit_all, make_campaign

CAMPAIGNS = [f"h{i:02d}" for i in range(50)]
WORKERS = 4
VICTIMS = 2
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
    for n in range(WORKERS + VICTIMS):
        park_after = rng.randint(50, 400) if n >= WORKERS else None
        args = (redis_url, 1000 + n, CAMPAIGNS, OPS, str(tmp_path / f"acks-{n}.txt"), park_after)
        proc = ctx.Process(target=ledger_hammer.run, args=args, daemon=True)
        proc.start()
        procs.append(proc)
    workers, victims = procs[:WORKERS], procs[WORKERS:]
    randomly_killed = workers[0]
    kill_at = time.monotonic() + rng.uniform(1.5, 3.0)

    deadline = time.monotonic() + 75
    parked: set[str] = set()
    checks = 0
    try:
        while any(p.is_alive() for p in workers) or len(parked) < VICTIMS:
            assert time.monotonic() < deadline, "hammer workers did not finish in time"
            for seed in r.lrange(ledger_hammer.PARKED, 0, -1):
                if seed not in parked:
                    parked.add(seed)
                    os.kill(victims[int(seed) - 1000 - WORKERS].pid, signal.SIGKILL)  # type: ignore[arg-type]
            if randomly_killed.is_alive() and time.monotonic() > kill_at:
                os.kill(randomly_killed.pid, signal.SIGKILL)  # type: ignore[arg-type]
            ledger.sweep(CAMPAIGNS, rng.randrange(ledger_hammer.TICKS))
            for cid in rng.sample(CAMPAIGNS, 5):
                _snapshot_holds(r, cid)
                checks += 1
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)

    assert [p.exitcode for p in victims] == [-signal.SIGKILL] * VICTIMS
    assert all(p.exitcode == 0 for p in workers[1:]), [p.exitcode for p in workers]
    assert checks > 0

    before_sweep = audit_all(r, CAMPAIGNS)
    parked_open = sum(1 for a in before_sweep.values() for t in a.open_ticks if t >= ledger_hammer.TICKS)
    assert parked_open == VICTIMS, "each killed victim leaves its reservation open"
    assert ledger.sweep(CAMPAIGNS, ledger_hammer.TICKS + 10) >= VICTIMS
    after = audit_all(r, CAMPAIGNS, expect_open=False)
    assert sum(a.balance.spent for a in after.values()) > 0

    # Every settlement a worker was told about is in the ledger, with the amount it was told.
    told = 0
    for path in tmp_path.glob("acks-*.txt"):
        for line in path.read_text().splitlines():
            cid, tick, total = line.split()
            record = r.hgetall(keys.reservation(cid, int(tick)))
            assert record["state"] == "settled" and int(record["spent"]) == int(total), (line, record)
            told += 1
    assert told > 100
