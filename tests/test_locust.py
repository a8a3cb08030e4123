"""The load tests against live fleets: ``locustfiles/api.py`` beside ``campaign-engine api`` and a worker
and beat, and ``make load`` (``locustfiles/steady.py`` at fixed rates beside ``campaign-engine up``). Every
route answered, none failed, and the fleet went on ticking.

Locust runs as a child process: it patches the standard library with gevent, which must not reach the
pytest process. Latency is reported, not asserted (the machine is shared): printed (``pytest -rP`` shows
it) and kept in ``test-artifacts/locust.txt``, with Locust's log in ``test-artifacts/locust.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys
from common.fleet import stats
from common.fleet.feed import SimulatedFeed
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.market.scenario import Scenario
from common.models import CampaignStatus
from locustfiles.load import LOAD_PREFIX, WARMUP_TICKS, RequestStats
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market
from tests.test_api_http import api_process, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfiles" / "api.py"
TOKEN = "locust-test-token"
TICK_SECONDS = 1.0
USERS, SPAWN_RATE, RUN_SECONDS = 10, 5, 15
# Every route the locustfile loads, as Locust names them.
ROUTES = {
    ("GET", "/health"), ("POST", "/feed"),
    ("GET", "/campaigns"), ("GET", "/campaigns/{id}"), ("PATCH", "/campaigns/{id}"),
    ("POST", "/campaigns/{id}/pause"), ("POST", "/campaigns/{id}/resume"), ("GET", "/decisions"),
    ("GET", "/api/overview"), ("GET", "/api/platforms"), ("GET", "/api/ticks"), ("GET", "/metrics"),
}  # fmt: skip
PERCENTILES = {"50%": 0.5, "95%": 0.95, "99%": 0.99, "max": 1.0}


def run_locust(url: str) -> subprocess.CompletedProcess[str]:
    """Locust for ``RUN_SECONDS``; its standard output is the final statistics as JSON (``--json``),
    counted after every user stopped, and its log and summary tables go to standard error."""
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "-u", str(USERS), "-r", str(SPAWN_RATE), "-t", f"{RUN_SECONDS}s", "--stop-timeout", "5",
        # Ad-ops think ten times faster than people: more load from few users, and every route within the run.
        "--think-time-scale", "0.1",
        "--json", "--only-summary", "--exit-code-on-error", "1",
    ]  # fmt: skip
    env = {**os.environ, "CE_API_TOKEN": TOKEN}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_SECONDS + 60, check=False)


def percentile(response_times: dict[str, int], share: float) -> int:
    """The smallest response time (ms, as Locust rounds them) that ``share`` of the requests did not exceed."""
    times = sorted((int(ms), n) for ms, n in response_times.items())
    wanted, seen = share * sum(n for _ms, n in times), 0
    for ms, n in times:
        seen += n
        if seen >= wanted:
            return ms
    return 0


def report(entries: list[dict[str, Any]]) -> str:
    """Requests per second and response-time percentiles of each route and of all of them."""
    seconds = max(e["last_request_timestamp"] for e in entries) - min(e["start_time"] for e in entries)
    merged: dict[str, int] = {}
    for e in entries:
        for ms, n in e["response_times"].items():
            merged[ms] = merged.get(ms, 0) + n
    total = {"method": "", "name": "all", "response_times": merged,
             "num_requests": sum(e["num_requests"] for e in entries)}  # fmt: skip
    head = " ".join(f"{p:>5}" for p in PERCENTILES)
    lines = [f"locust: {USERS} users for {seconds:.1f} s; response times in ms",
             f"{'':6} {'route':24} {'reqs':>5} {'req/s':>6} {head}"]  # fmt: skip
    for e in [*sorted(entries, key=lambda e: (e["name"], e["method"])), total]:
        times = " ".join(f"{percentile(e['response_times'], share):5d}" for share in PERCENTILES.values())
        rate = e["num_requests"] / seconds
        lines.append(f"{e['method']:6} {e['name']:24} {e['num_requests']:5d} {rate:6.1f} {times}")
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_api_under_load_with_a_live_fleet(r: redis.Redis, redis_url: str, tmp_path: Path, artifacts_dir: Path) -> None:
    market = write_market(tmp_path / "market.json")
    load_campaigns(r, market, 40)
    store = CampaignStore(r)
    budgets = {c.id: c.spec.budget for c in store.list()}
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS=str(TICK_SECONDS), CE_API_TOKEN=TOKEN)
    with running(env, tmp_path / "logs") as group, api_process(env, tmp_path / "logs") as (url, _api):
        wait_for_ticks(r, 3, group, timeout=60)
        wait_healthy(url, timeout=30)
        first = int(r.get(keys.LAST_TICK) or 0)
        done = run_locust(url)
        last = int(r.get(keys.LAST_TICK) or 0)
        assert not group.dead(), "a fleet process died under load"

    (artifacts_dir / "locust.log").write_text(done.stderr)
    assert done.returncode == 0, f"locust failed (exit {done.returncode}):\n{done.stderr[-6000:]}"
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    summary = report(entries)
    print(summary)

    # Every route was loaded, and nothing failed (exit code 0 also means no exception in a user).
    counts = {(e["method"], e["name"]): e["num_requests"] for e in entries}
    assert set(counts) == ROUTES, sorted(counts)
    assert all(n > 0 for n in counts.values()), counts
    assert sum(e["num_failures"] for e in entries) == 0, done.stderr[-6000:]

    # The writes were gentle: budgets only went up, and every campaign paused was resumed.
    after = {c.id: c for c in store.list()}
    assert all(after[cid].spec.budget >= budget for cid, budget in budgets.items())
    assert any(after[cid].spec.budget > budget for cid, budget in budgets.items())
    assert [cid for cid, c in after.items() if c.status is CampaignStatus.PAUSED] == []
    # The feed was posted for ticks the simulated platforms had published: their figures stand.
    simulated = SimulatedFeed(Scenario.load(market))
    for tick in range(first, last):
        for pid, figures in simulated.figures(tick).items():
            assert json.loads(r.hget(keys.feed(pid), str(tick)) or "{}") == figures.model_dump(), (pid, tick)

    # The fleet kept ticking under the load: a summary for most ticks of the run, each with evaluations.
    during = [e for e in stats.parse(r.xrange(keys.TICK_STATS)) if first <= e.tick < last]  # type: ignore[arg-type]
    expected = RUN_SECONDS / TICK_SECONDS
    assert len(during) >= expected / 2, f"{len(during)} tick summaries in ticks {first}..{last}"
    assert all(e.evaluated > 0 for e in during), during
    late = sum(e.late + e.dropped + e.missed for e in during)
    worst = max(e.worst_latency_ms for e in during)
    fleet = f"fleet: ticks {first}..{last}, {len(during)} summarised, late+dropped+missed {late}, worst {worst:.0f} ms"
    print(fleet)
    (artifacts_dir / "locust.txt").write_text(f"{summary}\n{fleet}\n")


# ``make load`` in CI: the fleet's demo campaigns. `up` groups them into about 40 evaluation tasks per core
# and tick, and `campaign-engine bench` on this 2-core machine evaluated 500 and 1,000 campaigns every
# tick with nothing late (slowest tick 1.0 s and 0.8 s of 2 s); `make load` at 1,000 under this load
# finished every tick within 1 s. Half of that leaves the tick half free for Locust, the API and pytest
# on the same cores, so a busy machine slows the ticks without making them lose evaluations.
STEADY_CAMPAIGNS, STEADY_SECONDS = 500, 30
STEADY_ROUTES = {
    ("GET", "/health"), ("POST", "/feed"),
    ("POST", "/campaigns"), ("GET", "/campaigns"), ("GET", "/campaigns/{id}"), ("PATCH", "/campaigns/{id}"),
    ("DELETE", "/campaigns/{id}"), ("POST", "/campaigns/{id}/pause"), ("POST", "/campaigns/{id}/resume"),
    ("GET", "/decisions"), ("GET", "/api/overview"), ("GET", "/api/platforms"), ("GET", "/api/ticks"),
    ("GET", "/metrics"),
}  # fmt: skip


def complete(entry: TickStats) -> bool:
    """Every campaign fanned out was evaluated in time, or skipped: paused or deleted by the load after the
    tick fanned it out (it then counts in ``skipped``, not ``evaluated``)."""
    return entry.evaluated + entry.skipped == entry.fanned and (entry.late, entry.dropped, entry.missed) == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_make_load_beside_a_fleet_of_many_campaigns(r: redis.Redis, redis_url: str, tmp_path: Path,
                                                    artifacts_dir: Path) -> None:  # fmt: skip
    run = tmp_path / "run"
    options = ["--campaigns", str(STEADY_CAMPAIGNS), "--duration", str(STEADY_SECONDS), "--run-dir", str(run)]
    argv = [sys.executable, "-m", "locustfiles.load", *options, "--csv", str(tmp_path / "locust")]
    env = {**os.environ, "CE_REDIS_URL": redis_url}
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=200, check=False)
    (artifacts_dir / "locust-steady.txt").write_text(done.stdout + done.stderr)
    print(done.stdout)
    assert done.returncode == 0, (
        f"make load failed (exit {done.returncode}):\n{done.stdout[-4000:]}{done.stderr[-3000:]}"
    )

    # Every request type was sent and none failed.
    requests = RequestStats.read(tmp_path / "locust_stats.csv")
    counts = {(e.method, e.name): e.requests for e in requests if e.name != "Aggregated"}
    assert set(counts) == STEADY_ROUTES, sorted(counts)
    assert all(n > 0 for n in counts.values()), counts
    assert sum(e.failures for e in requests) == 0, requests

    # Every tick after the warm-up was complete while the API was under load.
    ticks = stats.parse(r.xrange(keys.TICK_STATS))  # type: ignore[arg-type]
    measured = ticks[WARMUP_TICKS:]
    assert len(measured) >= STEADY_SECONDS / 2 / 2, f"{len(ticks)} tick summaries"
    assert all(e.fanned >= STEADY_CAMPAIGNS for e in measured), measured
    assert [e for e in measured if not complete(e)] == []
    # A campaign is skipped at most once per pause or delete: the next tick no longer fans it out.
    writes = sum(counts[route] for route in [("POST", "/campaigns/{id}/pause"), ("DELETE", "/campaigns/{id}")])
    assert sum(e.skipped for e in measured) <= writes

    # The load kept to its own campaigns and removed them; the demo campaigns are all there, none paused.
    campaigns = CampaignStore(r).list()
    assert [c.id for c in campaigns if c.id.startswith(LOAD_PREFIX)] == []
    assert len(campaigns) == STEADY_CAMPAIGNS
    assert [c.id for c in campaigns if c.status is not CampaignStatus.ACTIVE] == []
