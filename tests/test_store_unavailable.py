"""Every boundary of the domain that talks to Redis turns a failure of the store into StoreUnavailable.

The store fails in three real ways here: nothing listens on the port (a stopped server), the server
is paused (SIGSTOP: connections hang until the client times out), and the server is a replica that
refuses writes (as the old primary after a failover). A key holding the wrong type is not a failure
of the store but damaged data: it propagates as Redis's own error.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cli.redis_server import RedisServer, free_port
from common import keys
from common.errors import StoreUnavailable
from common.fleet import metrics
from common.fleet.clock import Clock
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.fleet.tick import begin
from common.forecast import cache as forecast_cache
from common.ledger.sweeper import sweep_all
from common.market.platforms import SimulatedPlatforms
from common.market.scenario import Scenario
from common.settings import Settings
from tests.fleet import load_campaigns, write_market

TICK = 60


def _spec(name: str) -> dict[str, Any]:
    return {"id": name, "budget": 10.0, "value_per_conversion": 5.0, "platforms": {"search": 1.0}, "end_tick": 100}


# name -> (call against a fleet whose Redis fails, whether it writes); "c0" has a campaign and a budget
BOUNDARIES: dict[str, tuple[Callable[[Fleet], object], bool]] = {
    "store create": (lambda f: f.store.create(_spec("fresh")), True),
    "store list": (lambda f: f.store.list(), False),
    "ledger reserve": (lambda f: f.ledger.reserve("c0", TICK, {"search": 1}), True),
    "sweeper": (lambda f: sweep_all(f.ledger, TICK, 3), False),
    "feed publish": (lambda f: f.feed.publish(TICK, f.simulated_feed.figures(TICK)), True),
    "feed window": (lambda f: f.feed.window(["search"], TICK, 5), False),
    "clock": (lambda f: Clock(f.r, f.settings.tick_seconds).epoch(), True),
    "forecast cache": (lambda f: forecast_cache.get_or_compute(f.r, TICK, lambda: {"tick": TICK}), True),
    "tick": (lambda f: begin(f, TICK), True),
    "evaluation": (lambda f: evaluate(f, ["c0"], TICK), True),
    # Past its deadline an evaluation only counts itself late: its own pipeline, no forecast read.
    "late evaluation": (lambda f: evaluate(f, ["c0"], TICK, deadline=0.0), True),
    "metrics record": (lambda f: metrics.record_tick(f.r, TickStats(tick=TICK, fanned=1)), True),
    "metrics snapshot": (lambda f: metrics.snapshot(f.r), False),
}


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_market(tmp_path_factory.mktemp("market") / "market.json")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, market: Path) -> Iterator[RedisServer]:
    """A server of this module's own: it is paused and demoted, which the shared one must never be."""
    with RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        client = redis.Redis(port=server.port, decode_responses=True)
        load_campaigns(client, market, 2)
        CampaignStore(client).create(_spec("c0"))
        client.close()
        yield server


def _fleet(port: int, market: Path, tmp_path: Path) -> Fleet:
    client = redis.Redis(
        port=port, decode_responses=True, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    scenario = Scenario.load(market)
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", scenario=market, run_dir=tmp_path)
    return Fleet(settings, client, scenario, SimulatedPlatforms(scenario))


@contextmanager
def _paused(server: RedisServer) -> Iterator[None]:
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


@contextmanager
def _replica(server: RedisServer) -> Iterator[None]:
    admin = redis.Redis(port=server.port)
    admin.replicaof("127.0.0.1", free_port())  # a primary that never answers: writes are refused
    try:
        yield
    finally:
        admin.replicaof("NO", "ONE")
        admin.close()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_stopped_server_is_store_unavailable(market: Path, tmp_path: Path, boundary: str) -> None:
    call, _ = BOUNDARIES[boundary]
    fleet = _fleet(free_port(), market, tmp_path)
    with pytest.raises(StoreUnavailable) as info:
        call(fleet)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_paused_server_is_store_unavailable(server: RedisServer, market: Path, tmp_path: Path, boundary: str) -> None:
    call, _ = BOUNDARIES[boundary]
    fleet = _fleet(server.port, market, tmp_path)
    with _paused(server), pytest.raises(StoreUnavailable) as info:
        call(fleet)
    assert isinstance(info.value.__cause__, redis.TimeoutError)


@pytest.mark.parametrize("boundary", [name for name, (_, writes) in BOUNDARIES.items() if writes])
def test_a_read_only_replica_is_store_unavailable(
    server: RedisServer, market: Path, tmp_path: Path, boundary: str
) -> None:
    call, _ = BOUNDARIES[boundary]
    fleet = _fleet(server.port, market, tmp_path)
    with _replica(server), pytest.raises(StoreUnavailable) as info:
        call(fleet)
    assert isinstance(info.value.__cause__, redis.exceptions.ReadOnlyError)


def test_a_key_of_the_wrong_type_is_not_store_unavailable(server: RedisServer, market: Path, tmp_path: Path) -> None:
    """Damaged data is a bug to look at, not an outage to wait out: it is not hidden as one."""
    fleet = _fleet(server.port, market, tmp_path)
    fleet.r.set(keys.feed("search"), "not a hash")
    try:
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            fleet.feed.window(["search"], TICK, 5)
    finally:
        fleet.r.delete(keys.feed("search"))
