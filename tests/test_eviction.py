"""The fleet refuses a state store that may evict keys (common/fleet/eviction.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.errors import SettingsError
from common.fleet import eviction
from common.fleet.fleet import Fleet
from common.settings import Settings


@pytest.fixture
def configurable(r: redis.Redis) -> Iterator[redis.Redis]:
    """The test server, its memory settings put back afterwards (it serves the whole session)."""
    before = r.config_get("maxmemory*")
    yield r
    r.config_set("maxmemory", before["maxmemory"])
    r.config_set("maxmemory-policy", before["maxmemory-policy"])


@pytest.mark.parametrize(
    ("maxmemory", "policy", "refused"),
    [
        ("0", "allkeys-lru", False),  # no limit: nothing is ever evicted
        ("100mb", "noeviction", False),
        ("100mb", "allkeys-lru", True),
        ("100mb", "volatile-ttl", True),  # evaluation marks and tick claims have a TTL
    ],
)
def test_a_store_that_may_evict_is_refused(
    configurable: redis.Redis, redis_url: str, tmp_path: Path, maxmemory: str, policy: str, refused: bool
) -> None:
    configurable.config_set("maxmemory", maxmemory)
    configurable.config_set("maxmemory-policy", policy)
    assert bool(eviction.problems(configurable)) is refused
    settings = Settings(redis_url=redis_url, run_dir=tmp_path)
    if refused:
        with pytest.raises(SettingsError, match=f"maxmemory-policy {policy}"):
            Fleet.from_settings(settings)
    else:
        Fleet.from_settings(settings).r.close()


def test_health_fails_on_a_store_that_may_evict(configurable: redis.Redis, redis_url: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    configurable.config_set("maxmemory", "100mb")
    configurable.config_set("maxmemory-policy", "allkeys-lru")
    with TestClient(
        create_app(Settings(redis_url=redis_url)), client=("127.0.0.1", 5000), base_url="http://localhost"
    ) as client:
        body = client.get("/health").json()
    assert body["status"] == "unavailable"
    assert any("redis may evict keys" in reason and "allkeys-lru" in reason for reason in body["reasons"])
