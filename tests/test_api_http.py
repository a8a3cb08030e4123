"""The API as deployed: ``campaign-engine api`` in its own process, over real HTTP, beside a live fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from cli.processes import Child, ProcessGroup
from cli.redis_server import free_port
from common import keys
from common.fleet import decisions
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market
from worker.app import QUEUES

TOKEN = "http-test-token"


@contextmanager
def api_process(env: dict[str, str], log_dir: Path) -> Iterator[tuple[str, Child]]:
    """``campaign-engine api`` on a free port; yields its base URL once it answers."""
    port = free_port()
    group = ProcessGroup(log_dir)
    child = group.spawn("api", [sys.executable, "-m", "cli.main", "api", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if not child.alive or time.monotonic() > deadline:
                raise AssertionError("the API did not start:\n" + child.log_path.read_text()[-3000:])
            time.sleep(0.2)
        yield url, child
    finally:
        group.stop_all()


def wait_healthy(url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx2.get(f"{url}/health", timeout=5)
        body = response.json()
        if response.status_code == 200:
            return body
        time.sleep(0.5)
    raise AssertionError(f"never healthy: {body}")


def read_events(url: str, count: int, timeout: float, **params: str) -> list[dict[str, str]]:
    """The first ``count`` server-sent events of a stream, each as its fields."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx2.stream("GET", f"{url}/decisions/stream", params=params, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line:
                if "data" in current:
                    events.append(current)
                    if len(events) == count:
                        break
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


@pytest.mark.slow
def test_api_process_over_http_with_a_live_fleet(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    market = write_market(tmp_path / "market.json")
    ids = load_campaigns(r, market, 12)
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="1.0", CE_API_TOKEN=TOKEN)
    with running(env, tmp_path / "logs") as group, api_process(env, tmp_path / "logs") as (url, api):
        wait_for_ticks(r, 2, group, timeout=60)
        health = wait_healthy(url, timeout=30)
        assert health["workers_online"] >= 1 and health["redis"] is True
        assert health["last_tick_age_seconds"] < 5 and set(health["queue_depth"]) == set(QUEUES)

        # Live decisions arrive as server-sent events, exactly as the stream holds them.
        events = read_events(url, 5, timeout=20)
        assert len(events) == 5 and all(e["event"] == "decision" for e in events)
        for event in events:
            entry_id, index = decisions.split_bid_id(event["id"])
            assert index is not None, event["id"]
            entries: list[tuple[str, dict[str, str]]] = r.xrange(  # type: ignore[assignment]
                keys.DECISIONS, min=entry_id, max=entry_id
            )
            (_id, entry), *_ = decisions.parse(entries)
            record = entry.bids[index]
            data = json.loads(event["data"])
            assert data["id"] == event["id"] and data["campaign"] == record.campaign
            assert data["cost"] == record.cost and data["tick"] == record.tick
        only = read_events(url, 2, timeout=20, campaign=ids[0])
        assert {json.loads(e["data"])["campaign"] for e in only} == {ids[0]}

        # A write over HTTP changes what the fleet does from the next tick on.
        assert httpx2.post(f"{url}/campaigns/{ids[1]}/pause", timeout=5).status_code == 401
        paused = httpx2.post(f"{url}/campaigns/{ids[1]}/pause", headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=5)  # fmt: skip
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        paused_at = int(r.get(keys.LAST_TICK) or 0)
        wait_for_ticks(r, paused_at + 4, group, timeout=30)
        later = httpx2.get(f"{url}/decisions", params={"campaign": ids[1], "from_tick": paused_at + 2}, timeout=5)
        assert later.json()["decisions"] == [], "no bid for a paused campaign"

        text = httpx2.get(f"{url}/metrics", timeout=10).text
        found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
        assert found["ce_workers_online"] >= 1 and found["ce_bids_total"] > 0
        assert found["ce_last_tick"] >= paused_at + 3

        # An open event stream does not hold the server's shutdown.
        with httpx2.stream("GET", f"{url}/decisions/stream", timeout=30) as held:
            assert held.status_code == 200
            started = time.monotonic()
            api.process.terminate()
            api.process.wait(timeout=15)
            assert time.monotonic() - started < 8


def test_api_command_needs_the_fleets_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CE_REDIS_URL"}
    done = subprocess.run([sys.executable, "-m", "cli.main", "api"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "CE_REDIS_URL" in done.stderr and "Traceback" not in done.stderr


def test_api_command_needs_a_token(redis_url: str) -> None:
    """Started alone, the API refuses to make up a token that no client could know."""
    base = {k: v for k, v in os.environ.items() if k != "CE_API_TOKEN"}
    for token in (None, "", "  "):
        env = dict(base, CE_REDIS_URL=redis_url) | ({} if token is None else {"CE_API_TOKEN": token})
        done = subprocess.run([sys.executable, "-m", "cli.main", "api"], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: CE_API_TOKEN: not set") and len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr
