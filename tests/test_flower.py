"""Flower, as `campaign-engine up` runs it, sees the fleet: real worker, beat and Flower processes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis

from cli.redis_server import free_port
from cli.up import flower_argv, flower_env
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market

USER, PASSWORD = "ops", "s3cret-pass"


def _poll(get: Any, check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = get()
            if check(last):
                return last
        except httpx2.TransportError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{what}: last answer {last!r}")


@pytest.mark.slow
def test_flower_sees_workers_and_tasks_behind_basic_auth(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    market = write_market(tmp_path / "market.json")
    load_campaigns(r, market, 6)
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="1.0")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    auth = httpx2.BasicAuth(USER, PASSWORD)
    with running(env, tmp_path / "logs") as group:
        settings = Settings(flower_user=USER, flower_password=PASSWORD)
        flower = group.spawn("flower", flower_argv(port), flower_env(settings, env))
        wait_for_ticks(r, 2, group, timeout=60)
        try:
            workers = _poll(
                lambda: httpx2.get(f"{base}/api/workers", params={"refresh": "1"}, auth=auth, timeout=10),
                lambda resp: resp.status_code == 200 and any(name.startswith("test-") for name in resp.json()),
                timeout=40,
                what="Flower lists the running worker",
            )
            name = next(n for n in workers.json() if n.startswith("test-"))
            assert "ce.evaluate" in str(workers.json()[name].get("registered", "")), "it knows the engine's tasks"

            tasks = _poll(
                lambda: httpx2.get(f"{base}/api/tasks", auth=auth, timeout=10),
                lambda resp: (
                    resp.status_code == 200
                    and {"ce.tick", "ce.evaluate"} <= {t.get("name") for t in resp.json().values()}
                ),
                timeout=40,
                what="Flower has seen ce.tick and ce.evaluate run",
            )
            states = {t.get("state") for t in tasks.json().values() if t.get("name") == "ce.evaluate"}
            assert "SUCCESS" in states

            for path in ("/api/workers", "/api/tasks", "/"):
                assert httpx2.get(base + path, timeout=10).status_code == 401, path
            wrong = httpx2.get(f"{base}/api/workers", auth=httpx2.BasicAuth(USER, "nope"), timeout=10)
            assert wrong.status_code == 401
            # The password is nowhere in the process list: not on Flower's command line, nor its children's.
            listed = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
            assert str(flower.process.pid) in listed
            assert PASSWORD not in listed
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- flower log\n{flower.log_path.read_text()[-3000:]}") from None
