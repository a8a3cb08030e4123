"""Paper trading and the external feed: CE_FEED=external with the simulated adapter.

The fleet decides on figures posted the way a connector posts them (after each tick), nothing from
the simulator enters the feed, and each tick's bids clear with the market model once that tick's
figures arrive: held until then, settled exactly, counted once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from common import keys
from common.errors import SettingsError
from common.fleet import late, metrics, state
from common.fleet import tick as ticks
from common.fleet.decisions import bids, parse
from common.fleet.evaluation import evaluate
from common.fleet.feed import SimulatedFeed
from common.fleet.fleet import Fleet
from common.fleet.paper import PaperPlatforms
from common.ledger.sweeper import sweep_all
from common.market.platforms import Order, SimulatedPlatforms
from common.market.scenario import Scenario
from common.models import Bid
from common.money import to_micros, to_micros_ceil
from common.settings import Settings, load_settings
from tests.fleet import load_campaigns

HISTORY = 8  # ticks of figures posted before the first tick the fleet runs
TOKEN = "paper-token"


@pytest.fixture
def paper(redis_url: str, market: Path, tmp_path: Path) -> Iterator[Fleet]:
    settings = Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path, feed="external")
    f = Fleet.from_settings(settings)
    yield f
    f.close()


def run_tick(fleet: Fleet, tick: int) -> int:
    """A tick as the tick task runs it: begin, the evaluations of its fan-out, the late outcomes."""
    plan = ticks.begin(fleet, tick)
    assert plan is not None
    evaluated = sum(evaluate(fleet, group, tick).evaluated for group in plan.groups)
    late.collect(fleet, tick)
    return evaluated


def posted_bids(r: redis.Redis) -> list[tuple[int, str, str, float, float, float, float, float]]:
    entries = parse(r.xrange(keys.DECISIONS))
    return [
        (b.tick, b.campaign, b.platform, b.bid, b.spend_cap, b.cost, b.clicks, b.conversions) for _, b in bids(entries)
    ]


def test_the_fleet_paper_trades_on_posted_figures(paper: Fleet, market: Path, r: redis.Redis) -> None:
    assert isinstance(paper.platforms, PaperPlatforms)
    ids = load_campaigns(r, market, 20)
    scenario = Scenario.load(market)
    connector = SimulatedFeed(scenario)  # stands in for a real connector: the market's true figures
    for t in range(HISTORY):
        paper.feed.publish(t, connector.figures(t))
    last = HISTORY + 6
    for t in range(HISTORY, last):
        assert run_tick(paper, t) > 0
        # Nothing the simulator makes up enters the feed: tick t has no figures until they are posted.
        assert paper.feed.figures(list(scenario.platforms), t) == {}
        held = r.zrangebyscore(keys.LATE, t, t)
        assert held, f"tick {t}: no bid waits for its figures"
        assert not [b for b in posted_bids(r) if b[0] == t], "a bid cleared before its tick's figures arrived"
        reserved = sum(paper.ledger.balance(cid).reserved for cid in ids)
        assert reserved > 0, "the pending bids' grants are not held"
        paper.feed.publish(t, connector.figures(t))
    late.collect(paper, last)  # the next tick's task: the figures of the tick before it are in

    assert r.zcard(keys.LATE) == 0
    placed = posted_bids(r)
    assert {b[0] for b in placed} == set(range(HISTORY, last))
    # Cleared as the simulated platforms would clear the same bids on the same figures.
    specs = {c.id: c.spec for c in paper.store.get_many(ids).values()}
    simulated = SimulatedPlatforms(scenario)
    for tick, cid, pid, bid, cap, cost, clicks, conversions in placed:
        expected = simulated.submit(tick, [Order(Bid(cid, pid, bid, cap), specs[cid])])[0]
        assert expected is not None
        assert (cost, clicks, conversions) == pytest.approx((expected.cost, expected.clicks, expected.conversions))
    # The ledger charged each bid once, rounded up and never past its cap; nothing is left reserved.
    for cid in ids:
        balance = paper.ledger.balance(cid)
        billed = sum(min(to_micros_ceil(b[5]), to_micros(b[4])) for b in placed if b[1] == cid)
        assert balance.spent == billed, cid
        assert balance.reserved == 0, cid
    # The campaigns' own outcomes took the late bids once.
    spend = sum(state.read(r, cid).spend for cid in ids)
    assert spend == pytest.approx(sum(b[5] for b in placed))
    snap = metrics.snapshot(r)
    assert snap.counter("bids") == len(placed)
    # Each tick's summary counts its bids when they are placed, their outcomes still to come.
    counted = sum(int(r.hget(keys.tick_counters(t), "bids") or 0) for t in range(HISTORY, last))
    assert counted == len(placed)
    assert snap.counter("spend_micros") == sum(to_micros_ceil(b[5]) for b in placed)

    # Collecting again (an overlapping tick, a retry) changes nothing.
    before = [paper.ledger.balance(cid) for cid in ids]
    late.collect(paper, last + 1)
    assert [paper.ledger.balance(cid) for cid in ids] == before
    assert len(posted_bids(r)) == len(placed)


def test_figures_that_never_come_are_charged_in_full_after_the_grace(
    paper: Fleet, market: Path, r: redis.Redis
) -> None:
    ids = load_campaigns(r, market, 10)
    connector = SimulatedFeed(Scenario.load(market))
    for t in range(HISTORY):
        paper.feed.publish(t, connector.figures(t))
    run_tick(paper, HISTORY)
    granted = sum(paper.ledger.balance(cid).reserved for cid in ids)
    assert granted > 0
    grace = paper.settings.reservation_grace_ticks
    for t in range(HISTORY + 1, HISTORY + grace + 2):
        late.collect(paper, t)  # asks each tick; no figures come
        assert r.zcard(keys.LATE) > 0
    sweep_all(paper.ledger, HISTORY + grace + 2, grace)
    # Charged at the full grant: the engine cannot know the bids cost less, so it never under-counts.
    assert sum(paper.ledger.balance(cid).spent for cid in ids) == granted
    assert sum(paper.ledger.balance(cid).reserved for cid in ids) == 0
    # The figures arrive at last: the bids cost less than their caps, the ledger keeps the full charge.
    paper.feed.publish(HISTORY, connector.figures(HISTORY))
    late.collect(paper, HISTORY + grace + 2)
    assert sum(paper.ledger.balance(cid).spent for cid in ids) == granted
    assert r.zcard(keys.LATE) == 0


def test_a_platform_without_figures_is_forecast_and_marked_stale(paper: Fleet, market: Path, r: redis.Redis) -> None:
    load_campaigns(r, market, 5)
    scenario = Scenario.load(market)
    connector = SimulatedFeed(scenario)
    quiet = sorted(scenario.platforms)[0]
    for t in range(HISTORY):
        figures = connector.figures(t)
        if t >= 3:
            figures.pop(quiet)  # its connector stopped after tick 2
        paper.feed.publish(t, figures)
    ticks.begin(paper, HISTORY)
    cached = ticks.forecasts_for(paper, HISTORY)
    assert cached.stale == {quiet: 2}
    assert quiet in cached.forecasts.platforms, "a stale platform is still forecast from what it has"
    # The fleet's clock as if tick HISTORY were under way (the ticks above ran at once, not in time).
    seconds = paper.settings.tick_seconds
    epoch = time.time() - (HISTORY + 0.5) * seconds
    r.hset(keys.CLOCK, mapping={"epoch": repr(epoch), "tick_seconds": repr(seconds)})

    settings = Settings(redis_url=paper.settings.redis_url, api_token=TOKEN, feed="external")
    with TestClient(create_app(settings), client=("127.0.0.1", 5000), base_url="http://127.0.0.1:8000") as api:
        health = api.get("/health").json()
        feed = health["feeds"][quiet]
        assert feed["stale"] is True and feed["newest_tick"] == 2 and feed["stale_since_tick"] == 5
        assert feed["stale_since"] == pytest.approx(epoch + 5 * seconds)
        assert any(f"feed of platform {quiet} is stale since tick 5" in reason for reason in health["reasons"])
        metrics = api.get("/metrics").text
        assert f'ce_feed_stale{{platform="{quiet}"}} 1.0' in metrics
        assert "ce_outcomes_pending " in metrics


def test_bad_adapter_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    for value, reason in (("carrier-pigeon", "module:callable"), ("os.path:", "module:callable")):
        monkeypatch.setenv("CE_PLATFORM_ADAPTER", value)
        with pytest.raises(SettingsError, match=f"CE_PLATFORM_ADAPTER: .*{reason}"):
            load_settings()
    for value, reason in (
        ("no_such_module_here:make", "cannot import module 'no_such_module_here'"),
        ("tests.test_paper:nothing", "has no callable 'nothing'"),
        ("tests.test_paper:failing_factory", "failed: RuntimeError: no credentials"),
        ("tests.test_paper:no_submit", "has no submit"),
    ):
        with pytest.raises(SettingsError, match=f"CE_PLATFORM_ADAPTER: .*{reason}"):
            Fleet.from_settings(Settings(redis_url=redis_url, platform_adapter=value))


def test_a_factory_of_your_own_is_loaded(redis_url: str, market: Path) -> None:
    fleet = Fleet.from_settings(
        Settings(redis_url=redis_url, scenario=market, platform_adapter="tests.test_paper:own_adapter")
    )
    try:
        assert isinstance(fleet.platforms, SimulatedPlatforms)
        assert fleet.platforms.scenario.name == "from-the-factory"
    finally:
        fleet.close()


def own_adapter(settings: Settings) -> SimulatedPlatforms:
    assert settings.scenario is not None
    scenario = Scenario.load(settings.scenario)
    return SimulatedPlatforms(dataclasses.replace(scenario, name="from-the-factory"))


def failing_factory(settings: Settings) -> None:
    raise RuntimeError("no credentials")


def no_submit(settings: Settings) -> object:
    return object()
