"""Benchmark (not a check): what the tick task costs with many campaigns and a long season.

Run with ``pytest -m benchmark -s tests/test_tick_bench.py``. For N campaigns and a feed of S ticks
on the test Redis (the volume cycle learnt from all of it, as by default), the tick task's steps are timed
as ``begin`` runs them: the simulated feed's publish and trim, the forecasts, the due campaigns, the
counters and the previous tick's summary; then ``begin`` whole, on further ticks, as after the
evaluations of the tick before (which leave the campaigns' stake figures for the fan-out's order); then the forecasts
of a tick that refits every platform's volume cycle at once (``refit``), the worst tick. Each figure is the
median of ROUNDS ticks, also given as a multiple of one HGETALL round trip measured in the same run
so that runs on machines of different speed compare. Figures go to stdout and to
test-artifacts/tick_bench.json; docs/engine.md records a run.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys
from common.fleet import stake
from common.fleet import tick as ticks
from common.fleet.fleet import Fleet
from common.market.generator import generate
from common.settings import Settings

CAMPAIGNS = (2_000, 20_000)
SEASONS = (720, 43_200)
ROUNDS = 7
PLATFORMS = 4


def _median_ms(step: Callable[[int], object], first_tick: int) -> float:
    times = []
    for i in range(ROUNDS):
        started = time.perf_counter()
        step(first_tick + i)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _round_trip_ms(client: redis.Redis) -> float:
    client.hset("bench:baseline", mapping={"a": "1", "b": "2"})
    return statistics.median(_timed(lambda: client.hgetall("bench:baseline")) for _ in range(200))


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def _create_campaigns(fleet: Fleet, count: int) -> None:
    """``count`` campaigns in flight over both seasons' measured ticks; 1% end inside each of them."""
    templates = generate(campaigns=100, platforms=PLATFORMS, ticks=720, seed=5).campaigns
    for i in range(count):
        if i % 200 == 0:
            end = SEASONS[0] + 3
        elif i % 200 == 100:
            end = SEASONS[-1] + 3
        else:
            end = SEASONS[-1] + 10 * ROUNDS + 1_000
        spec = templates[i % len(templates)].model_copy(
            update={"id": f"b{i:05d}", "start_tick": i % 500, "end_tick": end}
        )
        fleet.store.create(spec)


def _forget_all_but_campaigns(client: redis.Redis) -> None:
    """Start a season afresh: drop the feed, forecasts and tick records, keep campaigns and platforms."""
    doomed = [k for k in client.scan_iter(count=1_000) if not k.startswith(("{c:", "ce:campaigns", "ce:platforms"))]
    for start in range(0, len(doomed), 1_000):
        client.delete(*doomed[start : start + 1_000])


def measure(fleet: Fleet, season: int) -> dict[str, float]:
    """Publish ``season`` ticks of feed, then time the tick task's steps and ``begin`` after it."""
    for tick in range(season):
        fleet.feed.publish(tick, fleet.simulated_feed.figures(tick))
    first = season + 1

    def steps(tick: int) -> dict[str, float]:
        assert ticks.claim(fleet, tick)
        parts = {
            "feed": _timed(lambda: ticks.publish_simulated_feed(fleet, tick)),
            "forecasts": _timed(lambda: ticks.forecasts_for(fleet, tick)),
        }
        due: list[str] = []
        parts["due"] = _timed(lambda: due.extend(ticks.due_campaigns(fleet, tick)))
        parts["counters"] = _timed(
            lambda: (ticks.open_counters(fleet, tick, len(due)), ticks.summarize(fleet, tick - 1))
        )
        return parts

    rounds = [steps(first + i) for i in range(ROUNDS)]
    figures = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}

    def refit_all(tick: int) -> None:
        # The worst tick: every platform's cycle refitted at once (as after the stored fits were lost).
        fleet.r.delete(keys.CYCLES)
        ticks.compute_forecasts(fleet, tick)

    figures["refit"] = _median_ms(refit_all, first)
    _as_after_evaluations(fleet, first + ROUNDS)
    figures["begin"] = _median_ms(lambda tick: ticks.begin(fleet, tick), first + ROUNDS)
    return figures


def _as_after_evaluations(fleet: Fleet, tick: int) -> None:
    """What a running fleet's evaluations leave for the next tick: each due campaign's stake figures."""
    due = ticks.due_campaigns(fleet, tick)
    specs, balances = fleet.store.get_many(due), fleet.ledger.balances(due)
    pipe = fleet.r.pipeline(transaction=False)
    stake.queue_record(pipe, {cid: (balances[cid].remaining, specs[cid].spec.end_tick) for cid in due})
    pipe.execute()


@pytest.mark.benchmark
@pytest.mark.timeout(1_800)
def test_tick_cost(
    request: pytest.FixtureRequest, redis_url: str, market: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    if "benchmark" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a benchmark: run it with -m benchmark")
    results: list[dict[str, Any]] = []
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    baseline = _round_trip_ms(client)
    for n in CAMPAIGNS:
        client.flushall()
        for season in SEASONS:
            settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path)
            fleet = Fleet.from_settings(settings)
            fleet.register_market()
            if season == SEASONS[0]:
                _create_campaigns(fleet, n)
            _forget_all_but_campaigns(client)
            results.append({"campaigns": n, "season": season, **measure(fleet, season)})
            fleet.close()
    client.close()

    columns = ("feed", "forecasts", "due", "counters", "begin", "refit")
    lines = [f"one HGETALL round trip: {baseline:.3f} ms; each step in ms (x round trips)"]
    lines.append(f"{'campaigns':>9}{'feed':>8}" + "".join(f"{c:>19}" for c in columns))
    for row in results:
        cells = "".join(f"{row[c]:>9.1f} ({row[c] / baseline:>6.0f}x)" for c in columns)
        lines.append(f"{row['campaigns']:>9,}{row['season']:>8,}{cells}")
    print("\n" + "\n".join(lines))
    (artifacts_dir / "tick_bench.json").write_text(json.dumps({"round_trip_ms": baseline, "runs": results}, indent=2))
