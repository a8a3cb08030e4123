"""``campaign-engine ledger audit`` as an operator runs it, against a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from common import keys
from common.ledger import Ledger, compaction
from tests.ledger_helpers import make_campaign

CLI = [sys.executable, "-m", "cli.main", "ledger", "audit"]


def _audit(redis_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CE_REDIS_URL=redis_url, CE_RUN_DIR=str(tmp_path))
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_audit_passes_then_names_a_broken_campaign(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    ledger = Ledger(r)
    for cid in ("a1", "a2"):
        make_campaign(r, cid)
        r.sadd(keys.CAMPAIGNS, cid)
        ledger.open(cid, 10_000)
        for t in range(10):
            ledger.reserve(cid, t, {"p": 300})
            ledger.settle(cid, t, {"p": 120 + t})
    compaction.compact(ledger, ["a1"], 5)
    ledger.settle("a2", 11, {"p": 50})  # an unreserved charge: recorded, and the books still balance
    ok = _audit(redis_url, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 campaigns audited, 0 with broken invariants" in ok.stdout

    r.hincrby(keys.budget("a2"), "spent", 1)  # a micro-unit spent without a trace
    broken = _audit(redis_url, tmp_path)
    assert broken.returncode == 1, broken.stdout
    assert "a2: budget + overdraft != remaining + reserved + spent" in broken.stdout
    assert "a1:" not in broken.stdout and "1 with broken invariants" in broken.stdout
    assert _audit(redis_url, tmp_path, "--campaign", "a1").returncode == 0
