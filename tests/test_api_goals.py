"""Goals through the HTTP API: accepted in one field (or a former one), refused with the field named,
and shown with their progress and projection once the engine has planned them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from common.engine import CampaignState, decide
from common.fleet import state
from common.fleet.store import CampaignStore
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.settings import Settings
from tests.fleet import load_campaigns, write_market
from tests.ledger_helpers import snapshot

TOKEN = "goal-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC: dict[str, Any] = {
    "id": "reach",
    "budget": 100.0,
    "value_per_conversion": 40.0,
    "platforms": {"search": 0.02, "social": 0.05},
    "start_tick": 0,
    "end_tick": 100,
}


@pytest.fixture
def client(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    load_campaigns(r, write_market(tmp_path / "market.json", ticks=50), 0)  # registers the market's platforms
    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN))
    with TestClient(app, client=("127.0.0.1", 50000), base_url="http://localhost") as c:
        yield c


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"goal": {"metric": "impressions", "target": 10}}, "goal.metric", "'clicks' or 'conversions'"),
        ({"goal": {"metric": "clicks", "target": 0}}, "goal.target", "greater than 0"),
        ({"goal": {"metric": "clicks"}}, "goal.target", "required"),
        ({"goal": {"metric": "clicks", "target": 5, "by": "friday"}}, "goal.by", "not permitted"),
        ({"goal": 500}, "goal", "valid dictionary"),
        ({"reach_goal": 10, "conversion_target": 2}, "conversion_target", "one goal"),
        ({"reach_goal": -5}, "reach_goal", "must be a number > 0"),
        ({"goal": {"metric": "clicks", "target": 5}, "reach_goal": 10}, "reach_goal", "one goal"),
    ],
)
def test_a_bad_goal_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, r: redis.Redis, changes: dict[str, Any], field: str, reason: str
) -> None:
    before = snapshot(r)
    got = client.post("/campaigns", json={**SPEC, **changes}, headers=AUTH)
    assert got.status_code == 422, got.text
    errors = {e["field"]: e["reason"] for e in got.json()["errors"]}
    assert field in errors and reason in errors[field], errors
    assert snapshot(r) == before


def test_a_goal_is_shown_pending_until_planned_then_with_its_projection(client: TestClient, r: redis.Redis) -> None:
    created = client.post("/campaigns", json={**SPEC, "goal": {"metric": "clicks", "target": 300}}, headers=AUTH)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["spec"]["goal"] == {"metric": "clicks", "target": 300.0}
    assert body["goal"] == {
        "metric": "clicks", "target": 300.0, "achieved": 0.0, "projected": None, "status": "pending",
        "shortfall": None, "as_of_tick": None,
    }  # fmt: skip

    # What an evaluation writes: the engine's decision for tick 4 after 120 clicks.
    campaign = CampaignStore(r).get("reach")
    fig = Figures(0.8, 0.03, 500.0)
    forecast = PlatformForecast((fig,) * 3, Figures(0.05, 0.05, 0.05), True, 30)
    market = Forecasts(4, {p: forecast for p in SPEC["platforms"]})
    engine_state = state.read(r, "reach")
    decision = decide(
        CampaignState(campaign.spec, 4, 90.0, spent=10.0, clicks=120.0, pacing=engine_state.pacing),
        market,
        {"search": 0.4, "social": 0.5},
    )
    assert decision.goal is not None
    state.queue_outcomes(r, "reach", spend=10.0, clicks=120.0, conversions=3.0, value=120.0)
    state.queue_decision(r, "reach", decision, tick=4)

    got = client.get("/campaigns/reach").json()["goal"]
    assert got["status"] == "on track" and got["achieved"] == 120.0 and got["as_of_tick"] == 4
    assert got["projected"] == pytest.approx(decision.goal.projected) and got["projected"] >= 300.0
    assert got["shortfall"] == 0.0
    listed = client.get("/campaigns").json()["campaigns"]
    assert [c["goal"] for c in listed if c["id"] == "reach"] == [got]

    # A goal beyond the budget: the next decision says so, with the shortfall.
    client.patch("/campaigns/reach", json={"goal": {"metric": "clicks", "target": 1e7}}, headers=AUTH)
    assert client.get("/campaigns/reach").json()["goal"]["status"] == "pending"  # not planned for this goal yet
    spec = CampaignStore(r).get("reach").spec
    decision = decide(CampaignState(spec, 5, 90.0, spent=10.0, clicks=120.0), market, {"search": 0.4, "social": 0.5})
    state.queue_decision(r, "reach", decision, tick=5)
    risky = client.get("/campaigns/reach").json()["goal"]
    assert risky["status"] == "at risk" and risky["shortfall"] == pytest.approx(1e7 - risky["projected"])
    assert 120.0 < risky["projected"] < 1e7

    # Reached: met, whatever the last projection said.
    client.patch("/campaigns/reach", json={"reach_goal": 100}, headers=AUTH)  # the former field replaces the goal
    met = client.get("/campaigns/reach").json()
    assert met["spec"]["goal"] == {"metric": "clicks", "target": 100.0}
    assert met["goal"]["status"] == "met" and met["goal"]["shortfall"] == 0.0


def test_the_former_goal_fields_are_read_as_the_goal(client: TestClient) -> None:
    got = client.post("/campaigns", json={**SPEC, "conversion_target": 12.5}, headers=AUTH)
    assert got.status_code == 201, got.text
    assert got.json()["spec"]["goal"] == {"metric": "conversions", "target": 12.5}
    assert "conversion_target" not in got.json()["spec"]


def test_a_campaign_without_a_goal_shows_none(client: TestClient) -> None:
    assert client.post("/campaigns", json=SPEC, headers=AUTH).json()["goal"] is None
