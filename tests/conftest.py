"""Fixtures: a throwaway Redis server per test session, a clean database per test, and a Redis Cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cli.redis_cluster import LocalCluster, find_redis_cli
from cli.redis_server import RedisServer
from common.fleet.fleet import Fleet
from common.settings import Settings
from tests.fleet import write_market

# The suite runs the fleet on the simulated market, as `campaign-engine up` does, unless a test says
# otherwise: the production default (an external feed) would leave it without figures. Settings()
# and every process the tests start read it from the environment.
os.environ.setdefault("CE_FEED", "simulated")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real three-node Redis Cluster (``cli.redis_cluster``), started once for the tests that ask for it."""
    if find_redis_cli() is None:
        pytest.skip("no redis-cli to create a cluster with")
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A decoded client on a freshly flushed server."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """``up``'s demo market, shorter, saved as a scenario file."""
    return write_market(tmp_path / "market.json")


@pytest.fixture
def fleet(redis_url: str, market: Path, tmp_path: Path) -> Iterator[Fleet]:
    """The fleet's process state on a freshly flushed server and the demo market."""
    f = Fleet.from_settings(Settings(redis_url=redis_url, scenario=market, run_dir=tmp_path))
    yield f
    f.close()
