"""The simulated platforms follow docs/market.md exactly: checked against the reference scorer
(``../shared/tools/score.py``) where it is present."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from common.market.generator import Shape, generate
from common.market.model import outcome, outcomes
from common.market.platforms import Order, SimulatedPlatforms
from common.models import Bid, CampaignSpec
from tests.shared import reference_scorer, scenario_path


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(np.abs(a - b) <= np.maximum(1e-12, 1e-9 * np.maximum(np.abs(a), np.abs(b)))))


def test_outcomes_match_the_scorer_on_random_inputs() -> None:
    score = reference_scorer()
    rng = np.random.default_rng(11)
    n = 20_000
    args = (
        rng.uniform(0, 50, n) * (rng.random(n) > 0.05),  # volume, some zero
        np.exp(rng.normal(0, 1, n)),  # cpc
        rng.uniform(0.05, 1.2, n),  # sigma
        rng.uniform(0, 0.3, n),  # cvr
        rng.uniform(1, 300, n),  # value per conversion
        np.exp(rng.normal(0, 1.2, n)) * (rng.random(n) > 0.05),  # bid, some zero
        np.where(rng.random(n) < 0.2, np.inf, rng.uniform(0, 40, n)),  # cap, some unlimited
    )
    mine = outcomes(*args)
    theirs = score.outcome(*args)
    for name, a, b in zip(("cost", "clicks", "conversions", "waste"), mine, theirs, strict=True):
        assert _close(a, b), name


def test_simulated_platforms_clear_bids_with_the_scenario_series() -> None:
    score = reference_scorer()
    scenario = generate(campaigns=30, platforms=4, ticks=50, seed=3)
    platforms = SimulatedPlatforms(scenario)
    rng = np.random.default_rng(5)
    for tick in (0, 17, 49):
        orders = []
        for spec in scenario.campaigns:
            for pid in spec.platforms:
                orders.append(Order(Bid(spec.id, pid, float(rng.uniform(0, 4)), float(rng.uniform(0, 3))), spec))
        got = platforms.submit(tick, orders)
        for order, out in zip(orders, got, strict=True):
            s = scenario.platforms[order.bid.platform]
            ref = score.outcome(
                order.campaign.platforms[order.bid.platform] * s.volume[tick],
                s.cpc[tick],
                s.price_sigma,
                s.cvr[tick],
                order.campaign.value_per_conversion,
                order.bid.bid,
                order.bid.spend_cap,
            )
            assert out.cost == pytest.approx(float(ref[0]), rel=1e-9, abs=1e-12)
            assert out.clicks == pytest.approx(float(ref[1]), rel=1e-9, abs=1e-12)
            assert out.conversions == pytest.approx(float(ref[2]), rel=1e-9, abs=1e-12)


def test_cap_throttles_cost_to_the_cap() -> None:
    free = outcome(10, 1.0, 0.4, 0.05, 40, 3.0, float("inf"))
    capped = outcome(10, 1.0, 0.4, 0.05, 40, 3.0, free.cost / 2)
    assert capped.cost == pytest.approx(free.cost / 2)
    assert capped.clicks == pytest.approx(free.clicks / 2)


def test_no_bid_wins_nothing() -> None:
    assert outcome(10, 1.0, 0.4, 0.05, 40, 0.0, 5.0).is_empty
    assert outcome(0, 1.0, 0.4, 0.05, 40, 2.0, 5.0).is_empty


def test_generated_scenarios_are_reproducible_and_valid() -> None:
    a = generate(campaigns=20, platforms=3, ticks=100, seed=9)
    b = generate(campaigns=20, platforms=3, ticks=100, seed=9)
    assert a.to_dict() == b.to_dict()
    assert generate(campaigns=20, platforms=3, ticks=100, seed=10).to_dict() != a.to_dict()
    for series in a.platforms.values():
        assert (series.cpc > 0).all() and ((series.cvr >= 0) & (series.cvr <= 1)).all() and (series.volume >= 0).all()
    for spec in a.campaigns:
        assert isinstance(spec, CampaignSpec) and spec.end_tick is not None and spec.end_tick <= 100


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["platforms"][0].update(id="search engine"), "scenario.platforms.0.id"),
        (lambda d: d["campaigns"][0].update(start_tick=50, end_tick=None), "scenario.campaigns.0.start_tick"),
        (lambda d: d["platforms"][0]["cpc"].pop(), "platforms.0.cpc"),
        (lambda d: d["campaigns"][0].update(budget=-1), "scenario.campaigns.0.budget"),
        (lambda d: d["platforms"][1].update(price_sigma=50), "scenario.platforms.1.price_sigma"),
    ],
)
def test_bad_scenario_files_name_the_field(change: Any, field: str) -> None:
    from common.errors import InvalidInput
    from common.market.scenario import Scenario

    doc = generate(campaigns=2, platforms=2, ticks=50, seed=1).to_dict()
    change(doc)
    with pytest.raises(InvalidInput) as info:
        Scenario.from_dict(doc)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("smooth-20", {"campaigns": 20, "platforms": 4, "ticks": 720, "seed": 20, "shock_rate": 0, "late_flights": 0}),
        ("shocks-200", {"campaigns": 200, "platforms": 5, "ticks": 720, "seed": 200, "shock_rate": 0.01,
                        "late_flights": 0.35}),
    ],
)  # fmt: skip
def test_the_example_scenarios_are_what_the_generator_writes(name: str, options: dict[str, Any], tmp_path: Any) -> None:
    """scenarios/*.json are reproducible with the commands of docs/market.md."""
    path = tmp_path / f"{name}.json"
    generate(**options, name=name).save(path)
    assert path.read_bytes() == scenario_path(name).read_bytes()


def test_a_platform_the_simulated_market_lacks_wins_nothing() -> None:
    scenario = generate(campaigns=2, platforms=2, ticks=10, seed=3)
    spec = scenario.campaigns[0]
    listed = next(iter(spec.platforms))
    elsewhere = CampaignSpec.model_validate({**spec.model_dump(), "platforms": {**spec.platforms, "tv": 0.1}})
    orders = [Order(Bid(spec.id, "tv", 2.0, 5.0), elsewhere), Order(Bid(spec.id, listed, 2.0, 5.0), elsewhere)]
    tv, known = SimulatedPlatforms(scenario).submit(4, orders)
    assert tv.is_empty and known == SimulatedPlatforms(scenario).submit(4, orders[1:])[0]


def test_each_kind_of_market_has_the_cycle_it_names() -> None:
    """The kinds the engine is checked on: a day of 180 ticks, a week of 7, no cycle; tight budgets."""
    from common.forecast.detect import detect
    from common.market.kinds import KINDS

    days = KINDS["days"].scenario(1, campaigns=0)
    weekly = KINDS["weekly"].scenario(1, campaigns=0)
    flat = KINDS["flat"].scenario(1, campaigns=0)
    for series in days.platforms.values():
        found = detect(series.volume)
        assert found is not None and abs(found.period - 180) <= 9
    for series in weekly.platforms.values():
        found = detect(series.volume)
        assert found is not None and found.period == 7
    assert all(detect(series.volume) is None for series in flat.platforms.values())
    assert all((series.volume == 0).sum() >= 72 for series in flat.platforms.values()), "a long outage each"
    default = generate(campaigns=20, platforms=2, ticks=100, seed=3)
    tight = generate(campaigns=20, platforms=2, ticks=100, seed=3, shape=replace(Shape(), budget=(0.05, 0.1)))
    assert sum(c.budget for c in tight.campaigns) < 0.5 * sum(c.budget for c in default.campaigns)


def test_a_wandering_market_draws_its_walk_after_the_rest_of_a_platform() -> None:
    # Drawn last, the walk leaves every market without it as the same seed gave before it existed,
    # and the first platform's volume and its CPC's own moves as they were.
    calm = generate(campaigns=5, platforms=2, ticks=300, seed=7, shape=Shape(day_ticks=100))
    drifting = generate(campaigns=5, platforms=2, ticks=300, seed=7, shape=Shape(day_ticks=100, wander=0.02))
    first = next(iter(calm.platforms))
    assert np.array_equal(drifting.platforms[first].volume, calm.platforms[first].volume)
    extra = np.diff(np.log(drifting.platforms[first].cpc)) - np.diff(np.log(calm.platforms[first].cpc))
    assert 0.015 < float(np.std(extra)) < 0.025  # the walk's steps, about 0.02 a tick
    assert not np.array_equal(drifting.platforms[first].cvr, calm.platforms[first].cvr)
