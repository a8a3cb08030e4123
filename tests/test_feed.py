"""The feed's volume history and the volume cycles fitted from it, on a real Redis."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import redis

from common import keys
from common.fleet import cycles
from common.fleet.feed import RING_BYTES, VOLUME_HISTORY_TICKS, FeedStore
from common.fleet.fleet import Fleet
from common.fleet.tick import compute_forecasts
from common.forecast.base import MetricBase, PlatformBase, fit_base
from common.forecast.forecasts import forecast
from common.forecast.season import PlatformCycle, fit_cycle
from common.models import PlatformFigures


def figures(volume: float) -> dict[str, PlatformFigures]:
    return {"search": PlatformFigures(cpc=1.0, cvr=0.05, volume=volume)}


def test_the_volume_history_holds_what_the_hash_holds(r: redis.Redis) -> None:
    feed = FeedStore(r)
    for tick in (0, 1, 2, 4, 7):
        feed.publish(tick, figures(100.0 + tick / 3))
    volumes = feed.volumes(["search", "nowhere"], -2, 8)
    from_json = feed.window(["search"], 8, 11)[0, :, 2]
    np.testing.assert_array_equal(volumes[0], from_json)
    assert np.isnan(volumes[0, [0, 1, 5, 7, 8, 10]]).all()
    assert np.isnan(volumes[1]).all()
    assert feed.volumes(["search"], 5, 4).shape == (1, 0)


def test_the_first_publication_of_a_tick_is_the_one_kept(r: redis.Redis) -> None:
    feed = FeedStore(r)
    assert feed.publish(3, figures(10.0)) == 1
    assert feed.publish(3, figures(99.0)) == 0
    assert feed.volumes(["search"], 3, 3)[0, 0] == 10.0


def test_the_ring_wraps_and_never_returns_an_earlier_lap(r: redis.Redis) -> None:
    feed = FeedStore(r)
    lap = VOLUME_HISTORY_TICKS
    for tick in (5, lap - 2, lap - 1, lap, lap + 1):
        feed.publish(tick, figures(float(tick % 1000 + 1)))
    np.testing.assert_array_equal(feed.volumes(["search"], lap - 2, lap + 1)[0], [999.0, 1000.0, 1.0, 2.0])
    # Slot 5 holds tick 5: one lap later, tick lap + 5 is unknown, not tick 5's volume.
    assert np.isnan(feed.volumes(["search"], lap + 5, lap + 5)[0, 0])
    assert feed.volumes(["search"], 5, 5)[0, 0] == 6.0


def test_a_feed_published_before_the_history_existed_is_copied_once(r: redis.Redis) -> None:
    feed = FeedStore(r)
    for tick in range(6):
        feed.publish(tick, figures(float(tick + 1)))
    r.delete(keys.feed_volume("search"))  # as an older version left it: the hash alone
    feed.publish(6, figures(7.0))
    np.testing.assert_array_equal(feed.volumes(["search"], 0, 6)[0], np.arange(1.0, 8.0))


def test_the_ring_is_allocated_whole_when_it_is_created(r: redis.Redis) -> None:
    """Its memory does not grow over a lap: grown slot by slot, Redis would double it up to 1 MB and add 1 MB steps."""
    feed = FeedStore(r)
    feed.publish(0, figures(1.0))
    ring = keys.feed_volume("search")
    assert r.strlen(ring) == RING_BYTES
    first = r.memory_usage(ring)
    for tick in (1, 1_000, 30_000, VOLUME_HISTORY_TICKS - 2):
        feed.publish(tick, figures(float(tick + 2)))
    assert r.memory_usage(ring) == first
    assert first is not None and first < 1.2 * RING_BYTES
    # The zeros of the slots never written read as no tick, the last slot's included.
    volumes = feed.volumes(["search"], 0, VOLUME_HISTORY_TICKS - 1)[0]
    assert np.count_nonzero(~np.isnan(volumes)) == 5
    assert volumes[0] == 1.0 and volumes[30_000] == 30_002.0 and np.isnan(volumes[-1])


def test_a_ring_grown_slot_by_slot_keeps_its_volumes_when_it_is_completed(r: redis.Redis) -> None:
    feed = FeedStore(r)
    for tick in range(4):
        feed.publish(tick, figures(float(tick + 1)))
    ring = keys.feed_volume("search")
    kept = r.execute_command("GETRANGE", ring, 0, 4 * 16 - 1, NEVER_DECODE=True)
    r.delete(ring)
    r.setrange(ring, 0, kept)  # as an older version left it: only the slots written so far
    feed.publish(4, figures(5.0))
    assert r.strlen(ring) == RING_BYTES
    np.testing.assert_array_equal(feed.volumes(["search"], 0, 4)[0], [1.0, 2.0, 3.0, 4.0, 5.0])


def _publish(fleet: Fleet, ticks: range) -> None:
    for tick in ticks:
        fleet.feed.publish(tick, fleet.simulated_feed.figures(tick))


def test_every_tick_refits_with_a_refit_interval_of_one(fleet: Fleet) -> None:
    fleet.settings = fleet.settings.model_copy(update={"season_ticks": 120, "cycle_refit_ticks": 1})
    pids = sorted(fleet.scenario.platforms)
    fleet.register_market()
    _publish(fleet, range(150))
    got = compute_forecasts(fleet, 150).forecasts
    history = fleet.feed.window(pids, 149, 150)
    bases = {}
    for i, pid in enumerate(pids):
        coef = fit_cycle(fleet.feed.volumes([pid], 30, 149)[0], 30, 120)
        bases[pid] = fit_base(history[i], 0, 120, coef)
    assert all(base is not None for base in bases.values())
    assert got == forecast(history, pids, 150, window=fleet.settings.forecast_window, season=120, bases=bases)


def _cycles(
    fleet: Fleet, pids: list[str], tick: int, season: int | None, every: int, hints: Sequence[int] = ()
) -> dict[str, PlatformCycle | None]:
    fitted = cycles.fits(fleet.r, fleet.feed, pids, tick, season, every, hints)
    return {pid: fit.cycle for pid, fit in fitted.items()}


def test_a_cycle_is_refitted_every_k_ticks_staggered_and_from_earlier_ticks_only(fleet: Fleet) -> None:
    pids = ["a", "b", "c", "d"]
    season, every = 200, 8
    assert [cycles.refit_tick(100, every, i, 4) for i in range(4)] == [96, 98, 100, 94]
    for tick in range(300):
        volume = math.exp(0.5 * math.sin(2 * math.pi * tick / season) + 0.01 * (tick % 7))
        fleet.feed.publish(tick, {pid: PlatformFigures(cpc=1.0, cvr=0.05, volume=volume) for pid in pids})
    fitted = _cycles(fleet, pids, 250, season, every)
    for i, pid in enumerate(pids):
        due = cycles.refit_tick(250, every, i, 4)
        volume = fleet.feed.volumes([pid], due - season, due - 1)[0]
        coef = fit_cycle(volume, due - season, season)
        assert coef is not None and fitted[pid] == PlatformCycle(season, *coef)
    stored = {pid: cycles.Cycle.from_json(doc) for pid, doc in fleet.r.hgetall(keys.CYCLES).items()}
    assert [stored[pid].tick for pid in pids] == [248, 250, 244, 246]
    # Until its next refit tick a platform keeps its fit, whatever the feed says meanwhile.
    planted = PlatformCycle(season, 9.0, 9.0)
    fleet.r.hset(keys.CYCLES, "a", cycles.Cycle(248, season, planted).to_json())
    assert _cycles(fleet, pids, 255, season, every)["a"] == planted
    assert _cycles(fleet, pids, 256, season, every)["a"] != planted
    # An evaluation computing a late tick gets the fit of that tick and leaves the newer one stored.
    assert _cycles(fleet, pids, 250, season, every) == fitted
    assert cycles.Cycle.from_json(fleet.r.hget(keys.CYCLES, "a")).tick == 256  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "doc", ["{", '{"tick": 1}', '{"tick": 1, "season": 2, "coef": [1]}', '{"tick": 60, "season": 50, "coef": [1, 2]}']
)
def test_a_damaged_cycle_is_refitted(fleet: Fleet, doc: str) -> None:
    _publish(fleet, range(60))
    pid = sorted(fleet.scenario.platforms)[0]
    fresh = _cycles(fleet, [pid], 60, 50, 5)
    fleet.r.hset(keys.CYCLES, pid, doc)
    assert _cycles(fleet, [pid], 60, 50, 5) == fresh


def test_the_volume_history_outlives_the_trimmed_json(fleet: Fleet) -> None:
    from common.fleet.tick import FEED_RETENTION, begin

    fleet.settings = fleet.settings.model_copy(update={"season_ticks": FEED_RETENTION + 100})
    for tick in range(1, FEED_RETENTION + 60):
        assert begin(fleet, tick) is not None
    pid = sorted(fleet.scenario.platforms)[0]
    assert fleet.r.hget(keys.feed(pid), "0") is None, "the JSON is trimmed to the retention"
    assert not np.isnan(fleet.feed.volumes([pid], 0, FEED_RETENTION + 58)).any(), "the volume history is not"


def test_by_default_the_cycle_is_learnt_from_the_feed(fleet: Fleet) -> None:
    """No CE_SEASON_TICKS: the period is found in the volume history, here four days of 60 ticks
    in a market 500 ticks long, and fitted from ticks before the refit only."""
    from common.forecast.detect import learn

    assert fleet.season is None
    pids = ["a", "b"]
    rng = np.random.default_rng(5)
    for tick in range(240):
        fleet.feed.publish(
            tick,
            {
                "a": PlatformFigures(cpc=1.0, cvr=0.05, volume=math.exp(0.4 * math.sin(2 * math.pi * tick / 60))),
                "b": PlatformFigures(cpc=1.0, cvr=0.05, volume=math.exp(rng.normal(0.0, 0.05))),
            },
        )
    fitted = _cycles(fleet, pids, 240, None, 8, fleet.cycle_hints)
    found = fitted["a"]
    assert found is not None and found.period == 60
    assert math.hypot(found.a, found.b) == pytest.approx(0.4, abs=0.03)
    assert fitted["b"] is None, "white noise has no cycle"
    due = cycles.refit_tick(240, 8, 0, 2)
    assert found == learn(fleet.feed.volumes(["a"], 0, due - 1)[0], 0, hints=fleet.cycle_hints)


def test_a_cycle_document_carries_the_base_and_one_without_reads_as_none() -> None:
    metric = MetricBase(0.5, 0.1, -0.1, 0.25)
    fit = cycles.Cycle(96, 0, PlatformCycle(24, 0.2, 0.1), PlatformBase(24, (metric, metric, metric)))
    assert cycles.Cycle.from_json(fit.to_json()) == fit
    older = '{"tick": 96, "season": 0, "period": 24, "coef": [0.2, 0.1]}'
    assert cycles.Cycle.from_json(older) == cycles.Cycle(96, 0, PlatformCycle(24, 0.2, 0.1), None)
    with pytest.raises(ValueError, match="not a cycle document"):
        cycles.Cycle.from_json('{"tick": 96, "season": 0, "period": null, "coef": null, "base": {"period": 1}}')
