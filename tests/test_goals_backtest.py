"""Goals through the fleet's path: a backtest of a generated scenario with goals meets those the
hindsight plan says are reachable, and the API and the metrics show the progress the fleet stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from starlette.testclient import TestClient

from api.app import create_app
from cli.backtest import run_backtest
from common.backtest.hindsight import goal_plan
from common.fleet import state
from common.market.generator import generate
from common.models import GoalMetric
from common.settings import Settings

TOKEN = "goal-backtest-token"


def test_goals_are_an_option_that_leaves_the_rest_of_a_scenario_as_it_was() -> None:
    plain = generate(campaigns=20, platforms=3, ticks=60, seed=5)
    with_goals = generate(campaigns=20, platforms=3, ticks=60, seed=5, goals=0.5)
    assert all(c.goal is None for c in plain.campaigns)
    assert 3 <= sum(c.goal is not None for c in with_goals.campaigns) <= 17
    assert [c.model_copy(update={"goal": None}) for c in with_goals.campaigns] == plain.campaigns
    assert plain.to_dict()["platforms"] == with_goals.to_dict()["platforms"]


def test_the_hindsight_plan_is_the_cheapest_way_to_the_goal() -> None:
    scenario = generate(campaigns=6, platforms=3, ticks=60, seed=5, goals=1.0)
    for spec in scenario.campaigns:
        plan = goal_plan(spec, scenario)
        assert plan is not None and spec.goal is not None
        assert plan.reachable == (plan.cost <= spec.budget)  # no target CPA binds on these
        # Half the goal costs less than half of it: the cheapest units are bought first.
        half = goal_plan(spec.model_copy(update={"goal": spec.goal.model_copy(update={"target": plan.target / 2})}),
                         scenario)  # fmt: skip
        assert half is not None and half.cost < plan.cost / 2


def test_a_backtest_meets_the_goals_the_hindsight_says_are_reachable(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "goals.json"
    scenario = generate(campaigns=40, platforms=3, ticks=240, seed=11, goals=0.7)
    scenario.save(path)
    settings = Settings(redis_url=redis_url, run_dir=tmp_path, campaigns_per_task=5, api_token=TOKEN)
    report = run_backtest(settings, path, tmp_path / "log.jsonl", None, "inline", Console(quiet=True), False)
    assert report.goals is not None
    totals = report.goals.totals()
    assert totals["goals"] == sum(c.goal is not None for c in scenario.campaigns) >= 20
    assert totals["reachable"] >= 15 and totals["unreachable"] >= 1
    assert totals["reachable_met_share"] >= 0.85, report.goals.to_dict()
    assert 1.0 <= totals["cost_ratio_median"] < 1.1  # near the cheapest plan's spend
    for g in report.goals.results:
        if g.met and g.reachable:
            # Only what the goal needs: a met goal keeps most of what its cheapest plan leaves of the budget.
            assert g.spend <= 1.15 * g.hindsight_cost, g
        if not g.reachable:
            assert g.achieved < g.target

    # What the fleet stored, through the API and the metrics.
    by_id = {g.campaign: g for g in report.goals.results}
    app = create_app(settings)
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://localhost") as client:
        campaigns = client.get("/campaigns", params={"limit": 1000}).json()["campaigns"]
        shown = {c["id"]: c["goal"] for c in campaigns if c["goal"] is not None}
        assert set(shown) == set(by_id)
        for cid, goal in shown.items():
            assert goal["achieved"] == pytest.approx(by_id[cid].achieved, rel=1e-9)
            assert (goal["status"] == "met") == by_id[cid].met
        missed = [g for g in report.goals.results if not g.reachable]
        assert all(shown[g.campaign]["status"] == "at risk" and shown[g.campaign]["shortfall"] > 0 for g in missed)

        metrics = {
            (s.name, s.labels.get("status") or s.labels.get("metric")): s.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for s in family.samples
        }
    last = scenario.ticks - 1
    live = [c for c in scenario.campaigns if c.goal is not None and c.in_flight(last)]
    stored = {c.id: state.read(r, c.id).goal for c in live}
    for status in ("met", "on track", "at risk"):
        expected = sum(g is not None and g.status == status for g in stored.values())
        assert metrics[("ce_goals", status.replace(" ", "_"))] == expected
    for metric in GoalMetric:
        short = sum(g.shortfall for c, g in stored.items() if g is not None and g.metric == metric.value)
        assert metrics[("ce_goals_projected_shortfall", metric.value)] == pytest.approx(short, rel=1e-9, abs=1e-9)
