"""``campaign-engine memory``'s own loop, short: every part of Redis's state stops growing.

The full figure (a day of 2-second ticks, 43,200, of 50 campaigns) takes about an hour and is in
docs/ledger.md; this run is long enough for every bounded structure to reach its bound: the per-tick
keys (deleted ``TICK_KEYS_KEPT`` ticks later), the decisions and tick summaries (set short here),
and the campaigns' ledger detail. Sizes are ``MEMORY USAGE`` summed per part, not ``used_memory``,
whose allocator and client buffers move by themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.memory import measure
from common.fleet.tick import TICK_KEYS_KEPT
from common.settings import Settings


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_part_of_the_state_stops_growing(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A short season, so that every platform's cycle is fitted early on: a tick's forecasts carry the
    # cycle's outlook once it is known, and are a few kilobytes larger from then (bounded per platform).
    settings = Settings(
        run_dir=tmp_path_factory.mktemp("memory"),
        tick_stats_retention_ticks=100,
        decisions_retention_ticks=20,
        season_ticks=100,
    )
    settled = TICK_KEYS_KEPT + 300  # every per-tick key of the first ticks deleted by then
    then, now = measure(settings, campaigns=3, ticks=settled + 300, at=[settled])
    assert now.keys <= then.keys + 5, (then, now)
    assert set(now.parts) == set(then.parts)
    for name, size in now.parts.items():
        # A stream holds whole nodes of 100 entries and a hash rounds its table: a little slack.
        assert size <= then.parts[name] * 1.05 + 4_096, (name, then.parts, now.parts)
    # The tick summaries keep what they were asked to, not every tick of the run.
    assert then.parts["tick summaries"] < 60_000, then.parts


def test_the_command_prints_each_sample_and_the_ratio(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "memory", "--campaigns", "2", "--ticks", "40", "--at", "20,40",
         "--limit", "100"],
        capture_output=True, text=True, check=False, env={**os.environ, "CE_RUN_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tick        20" in done.stdout and "tick        40" in done.stdout
    assert "feed volume history" in done.stdout
    assert "memory at tick 40 is" in done.stdout
