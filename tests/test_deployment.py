"""The deployment of docker/compose.yaml, run as processes (CI has no docker engine), on an empty Redis.

The worker, beat, API and Flower start with exactly the commands and the settings the compose file
gives them (on free loopback ports); nothing else is set up for them. The test then does what an
operator does: registers platforms, imports campaigns whose flights are date-times, posts the
platforms' figures tick by tick as a connector would, and finds bids settled against those figures
(paper trading: the production default of an external feed and the simulated adapter), the ledger
agreeing with them to the micro-unit, the outcomes on NATS, the dashboard's figures, and a feed that
stops being posted reported stale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
import yaml

from cli.processes import ProcessGroup
from cli.redis_server import free_port
from common import keys
from common.fleet.decisions import bids, parse
from common.fleet.feed import SimulatedFeed
from common.fleet.outcomes import OUTCOME_PENDING
from common.ledger import Ledger
from common.ledger.audit import audit
from common.market.generator import generate
from common.market.scenario import Scenario
from common.money import from_micros, to_micros, to_micros_ceil
from tests.fleet import write_market
from tests.nats_server import NatsServer, find_nats_server, read_outcomes

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
TOKEN = "deployment-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")  # ${VARIABLE:-default}: what compose gives when it is unset
HISTORY = 6  # ticks of figures a connector backfills before it posts tick by tick


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def compose_env(service: dict[str, Any], values: dict[str, str], run_dir: Path) -> dict[str, str]:
    """The service's environment as compose gives it, each variable's value from ``values``, and the
    image's own (docker/Dockerfile: ``CE_RUN_DIR``, where beat keeps its schedule).

    Every variable the compose file sets must have a value here: a setting the file adds is one
    this test must decide on.
    """
    given = dict(service["environment"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CE_")}  # nothing from the test run
    for name, value in given.items():
        default = DEFAULT.fullmatch(str(value))
        if name not in values and default is None:
            raise AssertionError(f"compose sets {name} to {value!r}: give it a value in this test")
        env[name] = values[name] if name in values else default.group(1)  # type: ignore[union-attr]
    env.update(CE_RUN_DIR=str(run_dir), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def argv(command: list[str], ports: dict[str, int]) -> list[str]:
    """The compose command run from this interpreter's environment, on loopback; each port the file
    publishes (a key of ``ports``, alone or as ``--port=N``) replaced by a free one."""
    args = [Path(sys.executable).parent.joinpath(command[0]).as_posix()]
    for arg in command[1:]:
        arg = arg.replace("0.0.0.0", "127.0.0.1")
        for published, port in ports.items():
            if arg == published or arg.endswith(f"={published}"):
                arg = arg.removesuffix(published) + str(port)
        args.append(arg)
    return args


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    binary = find_nats_server()
    if binary is None:
        pytest.skip("no nats-server")
    directory = tmp_path / "nats"
    directory.mkdir()
    with NatsServer(directory, binary) as server:
        yield server


@pytest.mark.slow
def test_the_compose_processes_trade_on_posted_figures(
    redis_url: str, r: redis.Redis, nats: NatsServer, tmp_path: Path
) -> None:
    market_path = write_market(tmp_path / "market.json")
    market = Scenario.load(market_path)
    connector = SimulatedFeed(market)  # the platforms' true figures, as a connector would post them
    port, flower_port = free_port(), free_port()
    values = {
        "CE_REDIS_URL": redis_url, "CE_BROKER_URL": redis_url, "CE_TICK_SECONDS": "1.0", "CE_LOG_FORMAT": "json",
        "CE_API_TOKEN": TOKEN, "CE_FLOWER_USER": "admin", "CE_FLOWER_PASSWORD": "flower-password",
        "CE_API_READS": "open", "CE_DECISIONS_NATS_URL": nats.url, "FLOWER_BASIC_AUTH": "admin:flower-password",
    }  # fmt: skip
    defined = services()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    group = ProcessGroup(tmp_path / "logs")
    try:
        engine = {name for name, service in defined.items() if service.get("image", "").startswith("campaign-engine")}
        assert engine == {"api", "worker", "beat", "flower"}, "every process of the engine's own image runs here"
        for name in sorted(engine):
            env = compose_env(defined[name], values, run_dir)
            group.spawn(name, argv(defined[name]["command"], {"8000": port, "5555": flower_port}), env, cwd=tmp_path)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{url}/health/live") is not None, group, 60, "the API to answer")

        # An empty Redis knows no platform: register them, with their price spreads.
        for pid, series in market.platforms.items():
            done = httpx2.post(f"{url}/platforms", json={"id": pid, "price_sigma": series.price_sigma}, headers=AUTH)
            assert done.status_code == 201, done.text

        # Campaigns whose flights are date-times, imported from a file, all or nothing.
        start = datetime.now(UTC).replace(microsecond=0)
        rows = []
        for spec in generate(campaigns=8, platforms=len(market.platforms), ticks=200, seed=4).campaigns:
            row = spec.model_dump(exclude_none=True, exclude={"start_tick", "end_tick"})
            row.update(start=start.isoformat(), end=(start + timedelta(minutes=20)).isoformat())
            rows.append(row)
        campaigns = tmp_path / "campaigns.jsonl"
        campaigns.write_text("".join(json.dumps(row) + "\n" for row in rows))
        imported = cli(values, "campaigns", "import", str(campaigns))
        assert imported.returncode == 0, imported.stderr
        ids = [row["id"] for row in rows]

        # The fleet ticks on the figures posted: a backfill, then each tick's after it ends.
        wait_for(lambda: r.get(keys.LAST_TICK) is not None, group, 60, "the first tick")
        posted = -1
        first = int(r.get(keys.LAST_TICK) or 0)

        def post_ended() -> None:
            nonlocal posted
            ended = int(r.get(keys.LAST_TICK) or 0) - 1
            for t in range(max(posted + 1, first - HISTORY), ended + 1):
                done = httpx2.post(f"{url}/feed", json={"tick": t, "platforms": {
                    pid: fig.model_dump() for pid, fig in connector.figures(t).items()}}, headers=AUTH)  # fmt: skip
                assert done.status_code == 200, done.text
                posted = t

        def settled_ticks() -> set[int]:
            post_ended()
            return {b.tick for _, b in bids(parse(r.xrange(keys.DECISIONS)))}

        wait_for(lambda: len(settled_ticks()) >= 4, group, 90, "bids settled in four ticks")
        health = httpx2.get(f"{url}/health").json()
        assert health["feeds"] and not any(f["stale"] for f in health["feeds"].values()), health
        overview = httpx2.get(f"{url}/api/overview").json()
        metrics = httpx2.get(f"{url}/metrics").text
        assert "ce_outcomes_pending" in metrics and "ce_feed_lag_ticks" in metrics
        # Flower, behind its basic auth, sees the worker and the evaluations it ran.
        flower = f"http://127.0.0.1:{flower_port}"
        assert httpx2.get(f"{flower}/api/workers", timeout=10).status_code == 401
        login = httpx2.BasicAuth("admin", "flower-password")
        workers = httpx2.get(f"{flower}/api/workers", params={"refresh": "1"}, auth=login, timeout=10).json()
        assert workers, "Flower sees the worker"
        tasks = httpx2.get(f"{flower}/api/tasks", params={"taskname": "ce.evaluate"}, auth=login, timeout=10).json()
        assert tasks, "Flower saw evaluations"

        # A connector that stops: its feed is reported stale, and since when.
        quiet_since = posted
        wait_for(lambda: int(r.get(keys.LAST_TICK) or 0) > quiet_since + 4, group, 30, "ticks without figures")
        stale = httpx2.get(f"{url}/health").json()
        assert stale["status"] == "degraded"
        assert any(f"newest figures are of tick {quiet_since}" in reason for reason in stale["reasons"]), stale
    finally:
        group.stop_all()

    # The books, with every process stopped: each tick's bids charged once, at what the market model
    # made of the posted figures, rounded up and never past their caps; the ticks whose figures never
    # came charged in full by the sweeper after the grace; what still waits reserved.
    placed = [b for _, b in bids(parse(r.xrange(keys.DECISIONS)))]
    assert placed and all(b.tick <= posted for b in placed), "a bid cleared before its tick's figures were posted"
    ledger = Ledger(r)
    for cid in ids:
        found = audit(r, cid)
        assert found.ok, found.problems
        bid_ticks = {b.tick for b in placed if b.campaign == cid}
        for t in bid_ticks:
            billed = sum(min(to_micros_ceil(b.cost), to_micros(b.spend_cap)) for b in placed
                         if (b.campaign, b.tick) == (cid, t))  # fmt: skip
            assert found.settled_by_tick.get(t, 0) == billed, (cid, t)
        charged = {t for t, micros in found.settled_by_tick.items() if micros}
        assert charged - bid_ticks <= found.charged_by_sweeper, cid
        # A tick whose figures never came is held, or charged in full once its grace has passed.
        for t, held in found.states.items():
            if t > posted:
                assert held == "submitted" or t in found.charged_by_sweeper, (cid, t, held)
    # The dashboard's figures, read while it ran, are the ledger's of that moment.
    spent = sum(ledger.balance(cid).spent for cid in ids)
    assert 0 < overview["totals"]["spent"] <= from_micros(spent) + 1e-6  # a sum of floats
    assert overview["totals"]["campaigns"] == len(ids)
    # Every evaluated (campaign, tick) on NATS once; those that bid say their outcome was pending, and
    # a second message gives their bids once settled, at the costs the decision stream has.
    messages = read_outcomes(nats.url)
    assert messages and len({m.msg_id for m in messages}) == len(messages)
    decided = [m for m in messages if not m.late]
    bid_at = {(b.campaign, b.tick) for b in placed}
    assert bid_at <= {(m.campaign, m.tick) for m in decided}
    assert all(m.reason == OUTCOME_PENDING for m in decided if (m.campaign, m.tick) in bid_at)
    settled = {(m.campaign, m.tick): m for m in messages if m.late}
    assert settled and set(settled) <= bid_at
    for (cid, t), message in settled.items():
        stream = sorted((b.platform, b.cost) for b in placed if (b.campaign, b.tick) == (cid, t))
        assert sorted((b.platform, b.cost) for b in message.bids) == stream, (cid, t)


def cli(values: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CE_")}
    env.update(CE_REDIS_URL=values["CE_REDIS_URL"], CE_TICK_SECONDS=values["CE_TICK_SECONDS"], PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env, check=False, timeout=60
    )


def _get(url: str) -> Any:
    try:
        response = httpx2.get(url, timeout=2)
    except httpx2.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def wait_for(condition: Any, group: ProcessGroup, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = group.dead()
        if dead:
            raise AssertionError(f"{dead[0].name} died:\n{dead[0].log_path.read_text()[-3000:]}")
        if condition():
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {c.name}\n{c.log_path.read_text()[-2000:]}" for c in group.children)
    raise AssertionError(f"waited {timeout} s for {what}\n{logs}")
