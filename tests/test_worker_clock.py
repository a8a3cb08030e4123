"""A worker whose machine clock runs ahead expires evaluations by the fleet's time (worker/request.py).

The worker runs under libfaketime (Debian package faketime), its clock 10 s ahead of this machine's
and of Redis; Redis time is the fleet's. Celery alone would find every evaluation of the live tick
past its ``expires`` and drop it unrun.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from cli.processes import ProcessGroup
from cli.up import worker_argv
from common import keys
from common.fleet import clock
from common.fleet.fleet import Fleet
from common.fleet.tick import begin
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, write_market
from tests.test_worker import online, wait_until
from worker.app import create_app
from worker.fanout import publish_evaluations
from worker.stale import expires_at

FAKETIME = shutil.which("faketime")
AHEAD = 10.0


@pytest.mark.slow
@pytest.mark.skipif(FAKETIME is None, reason="no faketime on PATH (Debian package faketime; .ci/run installs it)")
def test_a_worker_whose_clock_runs_ahead_runs_the_live_tick_s_evaluations(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    market = write_market(tmp_path / "market.json")
    settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path)
    fleet = Fleet.from_settings(settings)
    ids = load_campaigns(r, market, 4)
    app = create_app(settings)
    app.loader.import_default_modules()
    group = ProcessGroup(tmp_path / "logs")
    try:
        argv = [str(FAKETIME), "-f", f"+{AHEAD:.0f}s", *worker_argv(f"ahead-{os.getpid()}@%h", 1)]
        group.spawn("worker", argv, fleet_env(redis_url, tmp_path, market))
        online(app, group, 1)
        tick = fleet.clock.current_tick()
        assert begin(fleet, tick) is not None
        # Due in a few seconds by the fleet's time: already past by the worker's own clock.
        deadline = fleet.clock.now() + AHEAD / 2
        publish_evaluations(app.tasks["ce.evaluate"], [ids[:2], ids[2:]], tick, deadline, expires_at(deadline))
        counters = keys.tick_counters(tick)
        settled = lambda: int(r.hget(counters, "evaluated") or 0) + int(r.hget(counters, "dropped") or 0)  # noqa: E731
        wait_until("both evaluations taken", lambda: settled() >= len(ids), group)
        offsets = {o.process: o.offset for o in clock.offsets(r, fleet.clock.now())}
    finally:
        group.stop_all()
        app.close()
        fleet.close()
    assert r.hget(counters, "dropped") in (None, "0"), "none dropped as expired"
    assert r.hget(counters, "evaluated") == str(len(ids))
    assert any(abs(offset + AHEAD) < 1.0 for offset in offsets.values()), f"the worker ran {AHEAD} s ahead: {offsets}"
