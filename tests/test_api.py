"""The HTTP API in-process (FastAPI's test client) over the real test Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from common import keys
from common.engine import Decision, PacingState
from common.fleet import decisions, state, stats
from common.fleet.decisions import CampaignDecision, DecisionRecord
from common.fleet.stats import TickStats
from common.forecast.cache import TickForecasts
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.ledger import Ledger
from common.settings import Settings
from tests.fleet import load_campaigns, write_market
from tests.ledger_helpers import snapshot
from worker.app import QUEUES

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPBACK = ("127.0.0.1", 50000)
# Loopback reads without the token must name a local host (the test client says "testserver" by default).
LOCAL = "http://localhost"
JSON = {"Content-Type": "application/json"}

SPEC = {
    "id": "spring",
    "budget": 100.0,
    "value_per_conversion": 40.0,
    "platforms": {"search": 0.02, "social": 0.05},
    "start_tick": 0,
    "end_tick": 100,
    "target_cpa": 30.0,
}


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return write_market(tmp_path / "market.json", ticks=50)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, api_token=TOKEN)


@pytest.fixture
def client(settings: Settings, r: redis.Redis, market: Path) -> Iterator[TestClient]:
    load_campaigns(r, market, 0)  # registers the market's platforms
    with TestClient(create_app(settings), client=LOOPBACK, base_url=LOCAL) as c:
        yield c


# --- campaigns -----------------------------------------------------------------------------------
def test_create_read_list_campaign(client: TestClient, r: redis.Redis) -> None:
    created = client.post("/campaigns", json=SPEC, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/campaigns/spring"
    body = created.json()
    assert body["status"] == "active" and body["spec"]["budget"] == 100.0
    assert body["balance"]["budget_micros"] == 100_000_000 and body["balance"]["remaining"] == 100.0
    assert body["outcomes"] == {
        "spend": 0.0, "value": 0.0, "clicks": 0.0, "conversions": 0.0, "last_tick": None, "cpa": None, "roi": None,
    }  # fmt: skip
    assert r.sismember(keys.ACTIVE, "spring")

    state.queue_outcomes(r, "spring", spend=12.5, clicks=10, conversions=0.5, value=50.0)
    state.queue_decision(r, "spring", Decision((), PacingState(lam=0.5), planned=1.25), tick=3)
    r.set(keys.LAST_TICK, 9)
    got = client.get("/campaigns/spring").json()
    assert got["outcomes"]["spend"] == 12.5 and got["outcomes"]["conversions"] == 0.5
    assert got["outcomes"]["cpa"] == pytest.approx(25.0) and got["outcomes"]["roi"] == pytest.approx(4.0)
    assert got["outcomes"]["last_tick"] == 3
    assert got["pacing"]["elapsed_share"] == pytest.approx(0.10) and got["pacing"]["plan"] == pytest.approx(10.0)
    assert (got["pacing"]["engine_planned"], got["pacing"]["lam"], got["pacing"]["no_bid_reason"]) == (1.25, 0.5, None)

    listed = client.get("/campaigns").json()
    assert listed["total"] == 1 and [c["id"] for c in listed["campaigns"]] == ["spring"]
    assert client.get("/campaigns", params={"status": "paused"}).json()["total"] == 0


def test_list_pages_and_filters(client: TestClient) -> None:
    for i in range(5):
        assert client.post("/campaigns", json={**SPEC, "id": f"c{i}"}, headers=AUTH).status_code == 201
    client.post("/campaigns/c3/pause", headers=AUTH)
    page = client.get("/campaigns", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [c["id"] for c in page["campaigns"]] == ["c1", "c2"]
    assert [c["id"] for c in client.get("/campaigns?status=paused").json()["campaigns"]] == ["c3"]
    assert client.get("/campaigns?status=active").json()["total"] == 4
    assert client.get("/campaigns?status=nonsense").status_code == 422


def test_writes_need_the_token_and_write_nothing_without_it(client: TestClient, r: redis.Redis) -> None:
    before = snapshot(r)
    missing = client.post("/campaigns", json=SPEC)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/campaigns", json=SPEC, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.post("/feed", json={"tick": 0, "platforms": {}}).status_code == 401
    assert client.delete("/campaigns/x").status_code == 401
    assert snapshot(r) == before


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({**SPEC, "budget": -5}, "budget", "greater than 0"),
        ({**SPEC, "budget": "lots"}, "budget", "valid number"),
        ({**SPEC, "id": "has space"}, "id", "letters, digits"),
        ({**SPEC, "platforms": {"search": 0.0}}, "platforms", "audience multiplier > 0"),
        ({**SPEC, "platforms": {"mars": 1.0}}, "platforms", "unknown platform 'mars'"),
        ({**SPEC, "start_tick": 50, "end_tick": 10}, "end_tick", "after start_tick"),
        ({**SPEC, "colour": "red"}, "colour", "Extra inputs"),
        ({k: v for k, v in SPEC.items() if k != "budget"}, "budget", "Field required"),
        ([1, 2], "body", "valid dictionary"),
    ],
)
def test_bad_campaign_is_422_with_field_and_reason(
    client: TestClient, r: redis.Redis, body: Any, field: str, reason: str
) -> None:
    before = snapshot(r)
    response = client.post("/campaigns", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert snapshot(r) == before


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id": "x", "budget": NaN, "value_per_conversion": 1, "platforms": {"search": 1}}', "budget"),
        (b'{"id": "x", "budget": Infinity, "value_per_conversion": 1, "platforms": {"search": 1}}', "budget"),
        (b'{"id": "x", "budget": 1, "value_per_conversion": -Infinity, "platforms": {"search": 1}}',
         "value_per_conversion"),
        (b'{"id": "x", "budget": 1, "value_per_conversion": 1, "platforms": {"search": NaN}}', "platforms.search"),
        (b'{"id": "x", "budget": ', "body"),
    ],
)  # fmt: skip
def test_nan_infinity_and_broken_json_are_422_not_500(
    client: TestClient, r: redis.Redis, raw: bytes, field: str
) -> None:
    before = snapshot(r)
    response = client.post("/campaigns", content=raw, headers={**AUTH, **JSON})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert snapshot(r) == before


def test_duplicate_id_is_a_conflict(client: TestClient, r: redis.Redis) -> None:
    assert client.post("/campaigns", json=SPEC, headers=AUTH).status_code == 201
    before = snapshot(r)
    again = client.post("/campaigns", json={**SPEC, "budget": 5.0}, headers=AUTH)
    assert again.status_code == 409, again.text
    assert [e["field"] for e in again.json()["errors"]] == ["id"]
    assert snapshot(r) == before


def test_update_goes_through_the_ledger(client: TestClient, r: redis.Redis) -> None:
    client.post("/campaigns", json=SPEC, headers=AUTH)
    raised = client.patch("/campaigns/spring", json={"budget": 150.0, "max_bid": 3.0}, headers=AUTH)
    assert raised.status_code == 200, raised.text
    assert raised.json()["balance"]["budget_micros"] == 150_000_000
    assert raised.json()["spec"]["max_bid"] == 3.0

    ledger = Ledger(r)
    ledger.reserve("spring", 1, {"search": 60_000_000})
    ledger.settle("spring", 1, {"search": 60_000_000})
    before = snapshot(r)
    refused = client.patch("/campaigns/spring", json={"budget": 50.0}, headers=AUTH)
    assert refused.status_code == 422
    error = refused.json()["errors"][0]
    assert error["field"] == "budget" and "below spent + reserved" in error["reason"]
    assert snapshot(r) == before, "a refused budget change leaves the campaign as it was"


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"id": "other"}, "id"), ({"colour": 1}, "colour"), ({}, "body"), ({"budget": -1}, "budget"),
     ({"platforms": {"mars": 1}}, "platforms")],
)  # fmt: skip
def test_bad_update_is_422_and_writes_nothing(
    client: TestClient, r: redis.Redis, changes: dict[str, Any], field: str
) -> None:
    client.post("/campaigns", json=SPEC, headers=AUTH)
    before = snapshot(r)
    response = client.patch("/campaigns/spring", json=changes, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert snapshot(r) == before


def test_an_update_of_other_fields_keeps_a_ledger_adjustment(client: TestClient, r: redis.Redis) -> None:
    client.post("/campaigns", json=SPEC, headers=AUTH)
    Ledger(r).adjust("spring", 25_000_000)  # an operator raises the budget in the ledger directly
    changed = client.patch("/campaigns/spring", json={"max_bid": 2.5}, headers=AUTH)
    assert changed.status_code == 200, changed.text
    assert changed.json()["balance"]["budget_micros"] == 125_000_000
    assert changed.json()["spec"]["budget"] == 125.0, "the stored spec follows the ledger"
    assert [e["amount"] for _id, e in r.xrange(keys.ledger("spring"))] == ["100000000", "25000000"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SPEC, "id": "abc\n"}, "id"),
        ({**SPEC, "id": "abc\r\nX-Injected: 1"}, "id"),
        # (2^53 - 1) / 1e6 is a float that rounds to 2^53 micro-units: one past what the ledger holds.
        ({**SPEC, "budget": 9007199254.740991}, "budget"),
        ({**SPEC, "budget": 1e-7}, "budget"),
        ({**SPEC, "platforms": {"search\n": 1.0}}, "platforms"),
    ],
)
def test_creation_refused_anywhere_writes_nothing(
    client: TestClient, r: redis.Redis, body: dict[str, Any], field: str
) -> None:
    before = snapshot(r)
    response = client.post("/campaigns", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert snapshot(r) == before


def test_the_largest_budget_the_ledger_holds_is_accepted(client: TestClient) -> None:
    response = client.post("/campaigns", json={**SPEC, "budget": 9007199254.74099}, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.json()["balance"]["budget_micros"] == 9_007_199_254_740_990


def test_pause_resume_delete(client: TestClient, r: redis.Redis) -> None:
    client.post("/campaigns", json=SPEC, headers=AUTH)
    assert client.post("/campaigns/spring/pause", headers=AUTH).json()["status"] == "paused"
    assert not r.sismember(keys.ACTIVE, "spring")
    assert client.post("/campaigns/spring/pause", headers=AUTH).status_code == 200, "pausing twice is harmless"
    assert client.post("/campaigns/spring/resume", headers=AUTH).json()["status"] == "active"
    assert r.sismember(keys.ACTIVE, "spring")
    assert client.delete("/campaigns/spring", headers=AUTH).status_code == 204
    assert r.keys("{c:spring}*") == []
    for method, path in [("get", "/campaigns/spring"), ("post", "/campaigns/spring/pause"),
                         ("patch", "/campaigns/spring"), ("delete", "/campaigns/spring")]:  # fmt: skip
        kwargs: dict[str, Any] = {"json": {"budget": 1.0}} if method == "patch" else {}
        missing = getattr(client, method)(path, headers=AUTH, **kwargs)
        assert missing.status_code == 404 and "does not exist" in missing.json()["detail"]


def test_a_finished_campaign_cannot_resume(client: TestClient, settings: Settings, r: redis.Redis) -> None:
    from common.fleet.store import CampaignStore

    client.post("/campaigns", json=SPEC, headers=AUTH)
    CampaignStore(r).finish("spring")
    response = client.post("/campaigns/spring/resume", headers=AUTH)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "status"


# --- feed ----------------------------------------------------------------------------------------
def _figures(cpc: Any = 0.8, cvr: Any = 0.03, volume: Any = 100.0) -> dict[str, Any]:
    return {"cpc": cpc, "cvr": cvr, "volume": volume}


def test_feed_publishes_once_per_platform_and_tick(client: TestClient, r: redis.Redis) -> None:
    post = {"tick": 0, "platforms": {"search": _figures(), "social": _figures(cpc=1.2)}}
    first = client.post("/feed", json=post, headers=AUTH)
    assert first.status_code == 200, first.text
    assert first.json() == {"tick": 0, "platforms": ["search", "social"], "written": 2, "already_published": 0}
    assert json.loads(r.hget(keys.feed("social"), "0") or "{}")["cpc"] == 1.2
    changed = {"tick": 0, "platforms": {"social": _figures(cpc=9.9)}}
    again = client.post("/feed", json=changed, headers=AUTH)
    assert again.json()["written"] == 0 and again.json()["already_published"] == 1
    assert json.loads(r.hget(keys.feed("social"), "0") or "{}")["cpc"] == 1.2, "the first publication stands"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"tick": 0, "platforms": {"search": {"cpc": NaN, "cvr": 0.1, "volume": 1}}}', "platforms.search.cpc"),
        ('{"tick": 0, "platforms": {"search": {"cpc": 1, "cvr": 0.1, "volume": Infinity}}}',
         "platforms.search.volume"),
        ('{"tick": 0, "platforms": {"search": {"cpc": -1, "cvr": 0.1, "volume": 1}}}', "platforms.search.cpc"),
        ('{"tick": 0, "platforms": {"search": {"cpc": 1, "cvr": 1.5, "volume": 1}}}', "platforms.search.cvr"),
        ('{"tick": 0, "platforms": {"search": {"cpc": 1, "cvr": 0.1, "volume": -2}}}', "platforms.search.volume"),
        ('{"tick": 0, "platforms": {"search": {"cpc": 1, "cvr": 0.1}}}', "platforms.search.volume"),
        ('{"tick": -1, "platforms": {"search": {"cpc": 1, "cvr": 0.1, "volume": 1}}}', "tick"),
        ('{"tick": 0, "platforms": {}}', "platforms"),
    ],
)  # fmt: skip
def test_bad_figures_are_422_and_write_nothing(client: TestClient, r: redis.Redis, raw: str, field: str) -> None:
    before = snapshot(r)
    response = client.post("/feed", content=raw.encode(), headers={**AUTH, **JSON})
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert snapshot(r) == before


def test_unknown_platform_or_future_tick_refuses_the_whole_post(client: TestClient, r: redis.Redis) -> None:
    before = snapshot(r)
    unknown = client.post("/feed", json={"tick": 0, "platforms": {"search": _figures(), "mars": _figures()}},
                          headers=AUTH)  # fmt: skip
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "platforms.mars"
    assert snapshot(r) == before, "the valid platform of a refused post is not written either"

    r.set(keys.LAST_TICK, 10)
    assert client.post("/feed", json={"tick": 12, "platforms": {"search": _figures()}}, headers=AUTH).status_code == 200
    future = client.post("/feed", json={"tick": 13, "platforms": {"search": _figures()}}, headers=AUTH)
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "tick"
    assert r.hget(keys.feed("search"), "13") is None


# --- decisions -----------------------------------------------------------------------------------
def _decide(r: redis.Redis, tick: int, campaign: str, *costs: float) -> None:
    """One entry: the campaign's bids of the tick, one per cost, on platforms p0, p1..."""
    bids = [DecisionRecord(1.0, tick, campaign, f"p{i}", 0.5, 2.0, cost, 3.0, 0.1, 0.0) for i, cost in enumerate(costs)]
    decisions.append(r, CampaignDecision.of(bids), 1000)


def test_decisions_filter_by_campaign_and_ticks(client: TestClient, r: redis.Redis) -> None:
    for tick in range(10):
        for campaign in ("a", "b"):
            _decide(r, tick, campaign, tick + 0.5)
    newest = client.get("/decisions", params={"limit": 3}).json()["decisions"]
    assert [(d["tick"], d["campaign"]) for d in newest] == [(9, "b"), (9, "a"), (8, "b")]
    only_a = client.get("/decisions", params={"campaign": "a", "from_tick": 3, "to_tick": 5}).json()["decisions"]
    assert [(d["tick"], d["campaign"], d["cost"]) for d in only_a] == [(5, "a", 5.5), (4, "a", 4.5), (3, "a", 3.5)]
    assert client.get("/decisions", params={"limit": 0}).status_code == 422
    assert client.get("/decisions", params={"campaign": "zzz"}).json()["decisions"] == []


def test_decisions_list_each_bid_of_an_entry_newest_first(client: TestClient, r: redis.Redis) -> None:
    for tick in range(3):
        _decide(r, tick, "a", 1.0, 2.0, 3.0)
        _decide(r, tick, "b", 4.0)
    ids = [entry_id for entry_id, _fields in r.xrange(keys.DECISIONS)]
    page = client.get("/decisions", params={"limit": 5}).json()
    assert [(d["id"], d["tick"], d["campaign"], d["platform"], d["cost"]) for d in page["decisions"]] == [
        (f"{ids[5]}/0", 2, "b", "p0", 4.0), (f"{ids[4]}/2", 2, "a", "p2", 3.0), (f"{ids[4]}/1", 2, "a", "p1", 2.0),
        (f"{ids[4]}/0", 2, "a", "p0", 1.0), (f"{ids[3]}/0", 1, "b", "p0", 4.0),
    ]  # fmt: skip
    assert page["scanned"] == 6, "entries read, not bids"
    everything = client.get("/decisions", params={"limit": 5000}).json()["decisions"]
    assert len(everything) == 12 and len({d["id"] for d in everything}) == 12
    only_a = client.get("/decisions", params={"campaign": "a", "from_tick": 1, "to_tick": 1}).json()["decisions"]
    assert [d["id"] for d in only_a] == [f"{ids[2]}/2", f"{ids[2]}/1", f"{ids[2]}/0"]


def test_decisions_page_back_over_batches(client: TestClient, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.decisions

    monkeypatch.setattr(api.decisions, "_BATCH", 4)  # several XREVRANGE pages for the stream below
    for tick in range(10):
        _decide(r, tick, "a", 1.0, 2.0)
    got = client.get("/decisions", params={"from_tick": 2, "limit": 5000}).json()
    assert [(d["tick"], d["platform"]) for d in got["decisions"]] == [
        (t, p) for t in range(9, 1, -1) for p in ("p1", "p0")
    ]
    assert got["scanned"] == 10, "read back to tick 0, past the two ticks of slack"


def _sse(redis_url: str, start: str, events: int, campaign: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The first ``events`` decision events of the live stream from ``start`` (a Last-Event-ID or "$")."""
    import asyncio

    from api.decisions import _events

    async def read() -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        stream = _events(redis_url, start, campaign)
        try:
            async for chunk in stream:
                for event in chunk.split("\n\n"):
                    lines = dict(line.split(": ", 1) for line in event.splitlines() if not line.startswith(":"))
                    if lines.get("event") == "decision":
                        found.append((lines["id"], json.loads(lines["data"])))
                if len(found) >= events:
                    return found[:events]
        finally:
            await stream.aclose()
        return found

    return asyncio.run(asyncio.wait_for(read(), timeout=10))


def test_the_live_stream_resumes_after_the_last_event_id(redis_url: str, r: redis.Redis) -> None:
    for tick in range(2):
        _decide(r, tick, "a", 1.0, 2.0, 3.0)
        _decide(r, tick, "b", 4.0)
    ids = [entry_id for entry_id, _fields in r.xrange(keys.DECISIONS)]
    every = _sse(redis_url, "0-0", 8)
    assert [event_id for event_id, _data in every] == [
        f"{ids[0]}/0", f"{ids[0]}/1", f"{ids[0]}/2", f"{ids[1]}/0", f"{ids[2]}/0", f"{ids[2]}/1", f"{ids[2]}/2",
        f"{ids[3]}/0",
    ]  # fmt: skip
    assert all(data["id"] == event_id for event_id, data in every)
    assert [data["cost"] for _id, data in every] == [1.0, 2.0, 3.0, 4.0] * 2
    # From inside an entry: the rest of its bids, then the entries after it.
    assert _sse(redis_url, f"{ids[0]}/0", 7) == every[1:]
    assert _sse(redis_url, f"{ids[0]}/2", 5) == every[3:]
    assert _sse(redis_url, ids[1], 4) == every[4:], "a bare entry id resumes after the whole entry"
    _decide(r, 2, "b", 5.0)
    _decide(r, 2, "a", 6.0)
    only_a = _sse(redis_url, f"{ids[2]}/1", 2, campaign="a")
    assert [(data["campaign"], data["cost"]) for _id, data in only_a] == [("a", 3.0), ("a", 6.0)]


# --- access to reads -----------------------------------------------------------------------------
def test_reads_are_open_on_loopback_only_by_default(settings: Settings, market: Path, r: redis.Redis) -> None:
    load_campaigns(r, market, 1)
    app = create_app(settings)
    with TestClient(app, client=("10.0.0.7", 40000)) as remote:
        refused = remote.get("/campaigns")
        assert refused.status_code == 401 and "CE_API_READS" in refused.json()["detail"]
        assert remote.get("/campaigns", headers=AUTH).status_code == 200
        assert remote.get("/campaigns", params={"token": TOKEN}).status_code == 401, "no token in URLs"
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/health/live").status_code == 200, "liveness stays open for container checks"
        assert remote.get("/").status_code == 200, "the page itself holds no data"
    with TestClient(app, client=("::1", 40000), base_url="http://[::1]:8000") as local:
        assert local.get("/campaigns").status_code == 200


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        ("localhost:8000", "", 200),
        ("127.0.0.1", "", 200),
        ("[::1]:8000", "", 200),
        ("engine.example:8000", "", 401),
        ("ENGINE.example", "engine.example", 200),
        ("attacker.example", "engine.example", 401),
    ],
)
def test_loopback_reads_without_the_token_must_name_an_allowed_host(
    redis_url: str, market: Path, r: redis.Redis, host: str, allowed: str, status: int
) -> None:
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) still sends its own Host."""
    load_campaigns(r, market, 0)
    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN, api_allowed_hosts=allowed))
    with TestClient(app, client=LOOPBACK, base_url=LOCAL) as c:
        response = c.get("/campaigns", headers={"Host": host})
        assert response.status_code == status, response.text
        if status == 401:
            assert "CE_API_ALLOWED_HOSTS" in response.json()["detail"]
        assert c.get("/campaigns", headers={"Host": host, **AUTH}).status_code == 200


@pytest.mark.parametrize(("mode", "loopback", "remote"), [("open", 200, 200), ("token", 401, 401)])
def test_read_modes(redis_url: str, market: Path, r: redis.Redis, mode: str, loopback: int, remote: int) -> None:
    load_campaigns(r, market, 0)
    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN, api_reads=mode))
    with TestClient(app, client=LOOPBACK, base_url=LOCAL) as c:
        assert c.get("/campaigns").status_code == loopback
        assert c.get("/campaigns", headers=AUTH).status_code == 200
    with TestClient(app, client=("192.0.2.1", 1)) as c:
        assert c.get("/campaigns").status_code == remote


# --- failures never show a stack trace -----------------------------------------------------------
def test_unexpected_failure_is_a_plain_500(settings: Settings, r: redis.Redis) -> None:
    r.hset(keys.campaign("broken"), mapping={"spec": "{not json", "status": "active"})
    with TestClient(create_app(settings), client=LOOPBACK, base_url=LOCAL, raise_server_exceptions=False) as c:
        response = c.get("/campaigns/broken")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server log has the details"}


def test_unreachable_redis_is_503(tmp_path: Path) -> None:
    from cli.redis_server import free_port

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", api_token=TOKEN)
    with TestClient(create_app(settings), client=LOOPBACK, base_url=LOCAL) as c:
        listed = c.get("/campaigns")
        assert listed.status_code == 503 and "unavailable" in listed.json()["detail"]
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["redis"] is False
        # A route that reads Redis itself, outside the store: the same translation answers.
        decisions = c.get("/decisions")
        assert decisions.status_code == 503 and "unavailable" in decisions.json()["detail"]
        metrics = c.get("/metrics")
        assert metrics.status_code == 200 and "ce_redis_up 0.0" in metrics.text


def test_health_without_fleet_says_why(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["redis"] is True and body["workers_online"] == 0
    assert "no worker answered a ping" in body["reasons"][0] and "no tick has run yet" in body["reasons"]
    assert body["queue_depth"] == dict.fromkeys(QUEUES, 0)


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/campaigns": {"get", "post"},
        "/campaigns/{campaign_id}": {"get", "patch", "delete"},
        "/campaigns/{campaign_id}/pause": {"post"},
        "/campaigns/{campaign_id}/resume": {"post"},
        "/feed": {"post"},
        "/decisions": {"get"},
        "/decisions/stream": {"get"},
        "/health": {"get"},
        "/metrics": {"get"},
        "/api/overview": {"get"},
        "/api/platforms": {"get"},
        "/api/ticks": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    # Refusals are documented with the body they have, not FastAPI's default HTTPValidationError.
    assert "HTTPValidationError" not in json.dumps(spec)
    for path, methods in expected.items():
        for method in methods:
            refusal = paths[path][method]["responses"]["422"]["content"]["application/json"]["schema"]
            assert refusal == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_pages_load_nothing_from_elsewhere(client: TestClient) -> None:
    """The machine running the engine may have no internet: no page may need a CDN."""
    for page in ("/docs", "/redoc", "/"):
        response = client.get(page)
        assert response.status_code == 200, page
        for url in re.findall(r'(?:src|href)="([^"]+)"', response.text):
            assert not url.startswith(("http:", "https:", "//")), (page, url)
            if not url.startswith("data:"):
                assert client.get(url).status_code == 200, (page, url)
    for asset in ("dashboard.js", "charts.js", "dashboard.css"):
        text = client.get(f"/static/{asset}").text
        assert not re.search(r"https?://", text), asset


# --- the dashboard's JSON ------------------------------------------------------------------------
def test_dashboard_endpoints(client: TestClient, r: redis.Redis) -> None:
    client.post("/campaigns", json=SPEC, headers=AUTH)
    r.set(keys.LAST_TICK, 5)
    published = client.post("/feed", json={"tick": 4, "platforms": {"search": _figures(cpc=1.0)}}, headers=AUTH)
    assert published.status_code == 200
    forecast = PlatformForecast((Figures(0.9, 0.02, 80.0),), Figures(0.0, 0.0, 0.0), True, 4)
    r.set(keys.forecast(4), TickForecasts(Forecasts(4, {"search": forecast}), {"search": 0.3}).to_json())
    r.set(keys.forecast(5), "not json at all")
    _decide(r, 5, "spring", 2.0, 6.0)  # one entry with two bids: the trend sums them
    stats.append(r, TickStats(tick=4, fanned=1, evaluated=1, bids=2, spend_micros=1_500_000, dropped=1, value=3.5,
                              worst_latency_ms=12.5), 1_000)  # fmt: skip

    overview = client.get("/api/overview").json()
    assert overview["totals"]["campaigns"] == 1 and overview["totals"]["budget"] == 100.0
    row = overview["campaigns"][0]
    assert row["id"] == "spring" and overview["trend_ticks"][-1] == 5
    assert row["roi_trend"][-1] == pytest.approx(2 * 0.1 * 40.0 / (2.0 + 6.0))
    assert overview["system"]["last_tick"] == 5

    platforms = client.get("/api/platforms", params={"ticks": 3}).json()
    assert platforms["ticks"] == [3, 4, 5]
    search = platforms["platforms"]["search"]
    assert search["forecast"]["cpc"] == [None, 0.9, None] and search["actual"]["cpc"] == [None, 1.0, None]

    ticks = client.get("/api/ticks").json()["ticks"]
    assert ticks == [{"tick": 4, "fanned": 1, "evaluated": 1, "bids": 2, "spend": 1.5, "value": 3.5, "late": 0,
                      "dropped": 1, "missed": 0, "worst_latency_ms": 12.5, "evaluated_share": 1.0,
                      "over_capacity": False}]  # fmt: skip
