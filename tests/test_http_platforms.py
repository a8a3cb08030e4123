"""CE_PLATFORM_ADAPTER=http against ``campaign-engine platform-server`` started as a real process.

The server keeps its own books by idempotency key; every test reconciles the ledger with them: what
the platform charged is what the ledger settled, a bid whose fate the engine cannot learn is charged
in full (never less), and nothing is charged twice.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys
from common.errors import BidsNotPlaced
from common.fleet import late
from common.fleet import tick as ticks
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.http_platforms import HttpPlatforms
from common.ledger.sweeper import sweep_all
from common.market.platforms import Order, idempotency_key
from common.market.scenario import Scenario
from common.models import Bid, PlatformInfo
from common.money import to_micros
from common.settings import Settings
from tests.fleet import load_campaigns

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 0.5  # CE_PLATFORM_TIMEOUT_SECONDS of these fleets
WARMUP = 4  # ticks of simulated feed before the ticks under test, so that every platform is forecast


class Server:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def mode(self, mode: str, delay: float = 0.0) -> None:
        self.call("/control", {"mode": mode, "delay_seconds": delay})

    def charges(self) -> dict[str, int]:
        return dict(self.call("/charges")["charges"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.fleet import write_market

    market = write_market(tmp_path_factory.mktemp("platform-server") / "market.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = market.with_suffix(".log")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "platform-server", str(market), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Server(port, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            running.charges()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                raise AssertionError(f"platform server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    try:
        yield running
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def fleet(redis_url: str, market: Path, tmp_path: Path, server: Server) -> Iterator[Fleet]:
    """A fleet bidding through HTTP on the server, its feed from the simulated market (same series)."""
    server.mode("normal")
    server.call("/reset", {})
    settings = Settings(
        redis_url=redis_url, scenario=market, run_dir=tmp_path, feed="simulated", platform_adapter="http",
        platform_timeout_seconds=TIMEOUT, breaker_failures=1_000,
    )  # fmt: skip
    f = Fleet.from_settings(settings)
    ids = load_campaigns(f.r, market, 12)
    assert ids
    for pid in f.scenario.platforms:
        f.store.add_platform(PlatformInfo(id=pid, price_sigma=f.scenario.platforms[pid].price_sigma,
                                          endpoint=f"{server.url}/{pid}"))  # fmt: skip
    for t in range(WARMUP):
        run(f, t)
    yield f
    f.close()


def run(fleet: Fleet, tick: int) -> None:
    """A tick as the tick task runs it: begin, the evaluations of its fan-out, the late outcomes."""
    plan = ticks.begin(fleet, tick)
    assert plan is not None
    for group in plan.groups:
        evaluate(fleet, group, tick)
    late.collect(fleet, tick)


def spent(fleet: Fleet, tick: int | None = None) -> int:
    """Micro-units the ledger settled, over every campaign (for one tick: from its reservation records)."""
    ids = fleet.store.ids()
    if tick is None:
        return sum(fleet.ledger.balance(cid).spent for cid in ids)
    return sum(int(fleet.r.hget(keys.reservation(cid, tick), "spent") or 0) for cid in ids)


def of_tick(charges: dict[str, int], tick: int) -> dict[str, int]:
    return {k: v for k, v in charges.items() if k.split(":")[1] == str(tick)}


def reserved(fleet: Fleet) -> int:
    return sum(fleet.ledger.balance(cid).reserved for cid in fleet.store.ids())


def test_outcomes_in_the_reply_are_settled_as_the_platform_charged(fleet: Fleet, server: Server) -> None:
    assert isinstance(fleet.platforms, HttpPlatforms)
    charged = server.charges()
    assert charged, "no bid reached the platform server"
    assert spent(fleet) == sum(charged.values())
    assert reserved(fleet) == 0


def test_a_late_outcome_is_settled_when_it_arrives(fleet: Fleet, server: Server, r: redis.Redis) -> None:
    server.mode("late")
    run(fleet, WARMUP)
    held = r.zcard(keys.LATE)
    assert held > 0
    assert reserved(fleet) > 0, "the grants of bids whose outcome is pending must stay held"
    assert spent(fleet, WARMUP) == 0
    server.mode("normal")
    run(fleet, WARMUP + 1)  # its tick task asks for the outcomes of WARMUP
    assert r.zcard(keys.LATE) == 0
    assert spent(fleet, WARMUP) == sum(of_tick(server.charges(), WARMUP).values()) > 0
    assert spent(fleet) == sum(server.charges().values())
    assert reserved(fleet) == 0


def test_a_timed_out_submit_is_asked_for_and_settled_exactly(fleet: Fleet, server: Server, r: redis.Redis) -> None:
    server.mode("slow", delay=TIMEOUT * 3)  # charged at once, the reply comes past the time-out
    run(fleet, WARMUP)
    assert r.zcard(keys.LATE) > 0
    server.mode("normal")
    run(fleet, WARMUP + 1)
    assert r.zcard(keys.LATE) == 0
    assert spent(fleet, WARMUP) == sum(of_tick(server.charges(), WARMUP).values()) > 0
    assert spent(fleet) == sum(server.charges().values())


def test_an_error_reply_whose_outcome_never_comes_is_charged_in_full(
    fleet: Fleet, server: Server, r: redis.Redis
) -> None:
    before = server.charges()
    server.mode("error")  # HTTP 500, nothing placed; the engine cannot know that
    run(fleet, WARMUP)
    granted = reserved(fleet)
    assert granted > 0 and r.zcard(keys.LATE) > 0
    server.mode("normal")
    grace = fleet.settings.reservation_grace_ticks
    for t in range(WARMUP + 1, WARMUP + grace + 2):
        late.collect(fleet, t)  # asks; the platform answers "unknown"
    assert r.zcard(keys.LATE) > 0
    sweep_all(fleet.ledger, WARMUP + grace + 2, grace)
    assert spent(fleet, WARMUP) == granted  # charged in full, never less than the bids could have cost
    assert of_tick(server.charges(), WARMUP) == {} and server.charges() == before
    assert reserved(fleet) == 0


def test_a_refused_submit_gives_the_grants_back(fleet: Fleet, server: Server, r: redis.Redis) -> None:
    server.mode("refuse")  # HTTP 409: nothing was placed
    run(fleet, WARMUP)
    assert r.zcard(keys.LATE) == 0
    assert spent(fleet, WARMUP) == 0
    assert reserved(fleet) == 0


def test_a_duplicate_submit_gets_the_same_outcome_and_no_second_charge(fleet: Fleet, server: Server) -> None:
    adapter = fleet.platforms
    assert isinstance(adapter, HttpPlatforms)
    spec = next(iter(fleet.store.get_many(fleet.store.ids()).values())).spec
    pid = next(iter(spec.platforms))
    tick = 10_000
    orders = [Order(Bid(spec.id, pid, 5.0, 3.0), spec)]
    first = adapter.submit(tick, orders)
    charged = server.charges()
    assert first[0] is not None and first[0].cost > 0
    assert adapter.submit(tick, orders) == first
    assert adapter.collect(tick, orders) == first
    assert server.charges() == charged
    assert charged[idempotency_key(tick, orders[0].bid)] <= to_micros(3.0)


def test_a_platform_without_endpoint_places_nothing(fleet: Fleet) -> None:
    adapter = fleet.platforms
    assert isinstance(adapter, HttpPlatforms)
    fleet.store.add_platform(PlatformInfo(id="nowhere"))
    spec = next(iter(fleet.store.get_many(fleet.store.ids()).values())).spec
    adapter._read_at = -1e9  # re-read the registry now rather than in REFRESH_SECONDS
    with pytest.raises(BidsNotPlaced, match="nowhere has no endpoint"):
        adapter.submit(1, [Order(Bid(spec.id, "nowhere", 1.0, 1.0), spec)])


def test_the_market_is_cleared_on_the_scenario(server: Server, market: Path) -> None:
    scenario = Scenario.load(market)
    pid = next(iter(scenario.platforms))
    reply = server.call(
        f"/{pid}/bids",
        {"tick": 3, "platform": pid, "bids": [{"key": "k:3:p", "campaign": "k", "bid": 0.0, "spend_cap": 1.0,
                                                 "audience": 0.1, "value_per_conversion": 10.0}]},
    )  # fmt: skip
    assert reply["outcomes"] == [
        {"key": "k:3:p", "status": "cleared", "cost": 0.0, "clicks": 0.0, "conversions": 0.0, "waste": 0.0}
    ]
