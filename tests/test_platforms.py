"""The platform registry: ``/platforms`` over the API and ``campaign-engine platforms``, on an empty Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from common import keys
from common.fleet.store import CampaignStore
from common.models import DEFAULT_PRICE_SIGMA
from common.settings import Settings
from tests.ledger_helpers import snapshot

TOKEN = "platform-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPBACK, LOCAL = ("127.0.0.1", 50000), "http://127.0.0.1:8000"  # a client on this machine
REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = {"id": "spring", "budget": 50.0, "value_per_conversion": 40.0, "platforms": {"search": 0.02}, "end_tick": 90}


@pytest.fixture
def client(redis_url: str, r: redis.Redis) -> Iterator[TestClient]:
    """The API on an empty Redis: no platform registered, as a fleet started without `up`."""
    with TestClient(create_app(Settings(redis_url=redis_url, api_token=TOKEN)), client=LOOPBACK, base_url=LOCAL) as c:
        yield c


def test_a_registered_platform_takes_campaigns_and_figures(client: TestClient, r: redis.Redis) -> None:
    refused = client.post("/campaigns", json=CAMPAIGN, headers=AUTH)
    assert refused.status_code == 422 and "known: none" in refused.text

    created = client.post("/platforms", json={"id": "search", "price_sigma": 0.4}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json() == {"id": "search", "price_sigma": 0.4, "endpoint": None}
    assert created.headers["location"] == "/platforms/search"
    defaulted = client.post("/platforms", json={"id": "social"}, headers=AUTH)
    assert defaulted.status_code == 201 and defaulted.json()["price_sigma"] == DEFAULT_PRICE_SIGMA

    assert client.post("/campaigns", json=CAMPAIGN, headers=AUTH).status_code == 201
    feed = {"tick": 0, "platforms": {"search": {"cpc": 0.8, "cvr": 0.03, "volume": 100.0}}}
    assert client.post("/feed", json=feed, headers=AUTH).status_code == 200

    replaced = client.post("/platforms", json={"id": "search", "price_sigma": 0.3}, headers=AUTH)
    assert replaced.status_code == 200 and replaced.json()["price_sigma"] == 0.3
    listed = client.get("/platforms").json()["platforms"]
    assert listed == [
        {"id": "search", "price_sigma": 0.3, "endpoint": None},
        {"id": "social", "price_sigma": DEFAULT_PRICE_SIGMA, "endpoint": None},
    ]
    assert client.get("/platforms/social").json()["price_sigma"] == DEFAULT_PRICE_SIGMA
    assert client.get("/platforms/tv").status_code == 404
    assert set(r.hkeys(keys.PLATFORMS)) == {"search", "social"}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"id": "has space"}, "id", "letters, digits"),
        ({"id": ""}, "id", "at least 1 character"),
        ({"price_sigma": 0.4}, "id", "Field required"),
        ({"id": "tv", "price_sigma": 0}, "price_sigma", "greater than 0"),
        ({"id": "tv", "price_sigma": 50}, "price_sigma", "less than or equal to 5"),
        ({"id": "tv", "price_sigma": "wide"}, "price_sigma", "valid number"),
        ({"id": "tv", "colour": "red"}, "colour", "Extra inputs"),
        ({"id": "tv", "endpoint": "ftp://ads.example.com"}, "endpoint", "http:// or https://"),
        ({"id": "tv", "endpoint": "https://"}, "endpoint", "with a host"),
        ({"id": "tv", "endpoint": "https://ads.example.com/v1?key=1"}, "endpoint", "no query"),
        ({"id": "tv", "endpoint": "https://user:pw@ads.example.com"}, "endpoint", "credentials"),
        ({"id": "tv", "endpoint": "https://ads.example.com:99999"}, "endpoint", "port"),
        ([1], "body", "valid dictionary"),
    ],
)
def test_bad_platform_is_422_naming_the_field_and_writes_nothing(
    client: TestClient, r: redis.Redis, body: Any, field: str, reason: str
) -> None:
    before = snapshot(r)
    response = client.post("/platforms", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert any(e["field"] == field and reason in e["reason"] for e in response.json()["errors"]), response.text
    raw = b'{"id": "tv", "price_sigma": NaN}'
    nan = client.post("/platforms", content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert nan.status_code == 422 and nan.json()["errors"][0]["field"] == "price_sigma"
    assert snapshot(r) == before


def test_writes_need_the_token(client: TestClient, r: redis.Redis) -> None:
    client.post("/platforms", json={"id": "search"}, headers=AUTH)
    before = snapshot(r)
    assert client.post("/platforms", json={"id": "tv"}).status_code == 401
    assert client.delete("/platforms/search", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert snapshot(r) == before


def test_a_platform_in_use_is_not_removed(client: TestClient, r: redis.Redis) -> None:
    assert client.delete("/platforms/search", headers=AUTH).status_code == 404
    client.post("/platforms", json={"id": "search"}, headers=AUTH)
    client.post("/campaigns", json=CAMPAIGN, headers=AUTH)
    for status in ("active", "paused"):
        if status == "paused":
            client.post("/campaigns/spring/pause", headers=AUTH)
        refused = client.delete("/platforms/search", headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["errors"] == [
            {"field": "id", "reason": "platform 'search' is used by 1 active or paused campaign(s): spring"}
        ]
        assert r.hexists(keys.PLATFORMS, "search")
    CampaignStore(r).finish("spring")
    # What the fleet keeps per platform goes with it; another platform's stays.
    for pid in ("search", "video"):
        r.hset(keys.feed(pid), "1", "{}")
        r.setrange(keys.feed_volume(pid), 0, b"x" * 16)
        r.hset(keys.platform_breaker(pid), "failures", 1)
        r.hset(keys.CYCLES, pid, "{}")
    assert client.delete("/platforms/search", headers=AUTH).status_code == 204
    assert client.get("/platforms").json() == {"platforms": []}
    assert not r.exists(keys.feed("search"), keys.feed_volume("search"), keys.platform_breaker("search"))
    assert not r.hexists(keys.CYCLES, "search")
    assert r.exists(keys.feed("video"), keys.feed_volume("video"), keys.platform_breaker("video")) == 3
    assert r.hexists(keys.CYCLES, "video")


def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "platforms", *args], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, CE_REDIS_URL=redis_url, PYTHONPATH=str(REPO)), check=False, timeout=60,
    )  # fmt: skip


def test_command_line_adds_lists_and_removes(redis_url: str, r: redis.Redis) -> None:
    added = _cli(redis_url, "add", "search", "--price-sigma", "0.35")
    assert added.returncode == 0, added.stderr
    assert "registered search" in added.stdout
    assert _cli(redis_url, "add", "social").returncode == 0
    listed = _cli(redis_url, "list")
    assert listed.stdout.splitlines() == ["search\t0.35", "social\t0.5"]

    bad = _cli(redis_url, "add", "tv", "--price-sigma", "-1")
    assert bad.returncode == 2 and "price_sigma: Input should be greater than 0" in bad.stderr
    assert not r.hexists(keys.PLATFORMS, "tv")
    nowhere = _cli(redis_url, "add", "tv", "--endpoint", "ftp://ads.example.com")
    assert nowhere.returncode == 2 and "endpoint: must be an http:// or https:// URL" in nowhere.stderr
    assert not r.hexists(keys.PLATFORMS, "tv")
    with_endpoint = _cli(redis_url, "add", "tv", "--endpoint", "https://ads.example.com/v1/")
    assert with_endpoint.returncode == 0, with_endpoint.stderr
    assert _cli(redis_url, "list").stdout.splitlines()[-1] == "tv\t0.5\thttps://ads.example.com/v1"
    assert _cli(redis_url, "remove", "tv").returncode == 0

    CampaignStore(r).create(CAMPAIGN)
    in_use = _cli(redis_url, "remove", "search")
    assert in_use.returncode == 1 and "used by 1 active or paused campaign(s): spring" in in_use.stderr
    assert "Traceback" not in in_use.stderr
    assert _cli(redis_url, "remove", "social").returncode == 0
    assert _cli(redis_url, "remove", "social").returncode == 1
    assert set(r.hkeys(keys.PLATFORMS)) == {"search"}
