"""Benchmark (not a check): reserve, submit, settle cycles per second beside a trivial EVALSHA on the same server.

Run with ``make bench-micro ARGS=tests/test_ledger_bench.py`` (or ``pytest -m benchmark -s``). For each
AOF fsync policy a private Redis is started, and on it one client measures, for a fixed time each:
``EVALSHA`` of ``return 1``; a ``reserve``, ``submit``, ``settle`` cycle, a call at a time; and
both 100 to a pipeline, the cycle as an evaluation runs it (reserve and submit in one round trip,
settle in a second). The ratio says how many trivial script calls one cycle costs; the server's own time per script call
(from INFO commandstats) shows how much of it is Lua and how much the client and the round trip.
Figures go to stdout and to test-artifacts/ledger_bench.json; docs/ledger.md records a run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cli.redis_server import FsyncPolicy, RedisServer
from common.ledger import Ledger
from tests.ledger_helpers import audit_all, make_campaign

SECONDS = 2.0
PIPELINE = 100
CAMPAIGNS = [f"b{i:03d}" for i in range(PIPELINE)]


def _rate(client: redis.Redis, step: Callable[[int], int]) -> tuple[float, float]:
    """Units per second of ``step(i)`` (which returns how many units it did), run for SECONDS, and
    the server's own microseconds per EVALSHA meanwhile."""
    client.config_resetstat()
    done, i = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS:
        done += step(i)
        i += 1
    stats: dict[str, Any] = client.info("commandstats")
    return done / elapsed, float(stats["cmdstat_evalsha"]["usec_per_call"])


def measure(client: redis.Redis) -> dict[str, float]:
    ledger = Ledger(client)
    for cid in CAMPAIGNS:
        make_campaign(client, cid)
        ledger.open(cid, 10**15)
    trivial = client.register_script("return 1")
    trivial()

    def one_trivial(_: int) -> int:
        trivial()
        return 1

    def many_trivial(_: int) -> int:
        pipe = client.pipeline(transaction=False)
        for _ in range(PIPELINE):
            pipe.execute_command("EVALSHA", trivial.sha, 0)
        pipe.execute()
        return PIPELINE

    def one_cycle(i: int) -> int:
        cid, tick = CAMPAIGNS[i % PIPELINE], i // PIPELINE
        ledger.reserve(cid, tick, {"search": 2_000, "social": 1_000})
        grant = ledger.submit(cid, tick)
        ledger.settle(cid, tick, {p: g // 2 for p, g in grant.granted.items()})
        return 1

    def many_cycles(i: int) -> int:
        # As an evaluation does: reserve and submit in one round trip, then settle in another.
        tick = 1_000_000 + i  # ticks the single calls never reach
        grants = ledger.reserve_and_submit_many((cid, tick, {"search": 2_000, "social": 1_000}) for cid in CAMPAIGNS)
        costs = [(g.campaign, tick, {p: v // 2 for p, v in g.granted.items()}) for g in grants]  # type: ignore[union-attr]
        ledger.settle_many(costs)
        return PIPELINE

    figures = {}
    for name, step in [
        ("trivial_single", one_trivial),
        ("cycles_single", one_cycle),
        ("trivial_pipelined", many_trivial),
        ("cycles_pipelined", many_cycles),
    ]:
        figures[name], figures[f"{name}_server_usec"] = _rate(client, step)
    audit_all(client, CAMPAIGNS, expect_open=False)
    return figures


@pytest.mark.benchmark
@pytest.mark.timeout(120)
def test_ledger_throughput(request: pytest.FixtureRequest, tmp_path: Path, artifacts_dir: Path) -> None:
    if "benchmark" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a benchmark: run it with -m benchmark")
    results: dict[str, Any] = {}
    policies: tuple[FsyncPolicy, ...] = ("always", "everysec")
    for policy in policies:
        with RedisServer(tmp_path / policy, appendonly=True, appendfsync=policy) as server:
            client = redis.Redis(port=server.port, decode_responses=True)
            results[policy] = measure(client)
            client.close()

    lines = [
        f"{'appendfsync':<12}{'mode':<11}{'return 1 /s':>13}{'cycles /s':>11}{'cycle = n trivial':>18}"
        f"{'server us/call: trivial':>25}{'ledger':>8}",
    ]
    for policy, f in results.items():
        for mode in ("single", "pipelined"):
            trivial, cycles = f[f"trivial_{mode}"], f[f"cycles_{mode}"]
            lines.append(
                f"{policy:<12}{mode:<11}{trivial:>13,.0f}{cycles:>11,.0f}{trivial / cycles:>18.1f}"
                f"{f[f'trivial_{mode}_server_usec']:>25.1f}{f[f'cycles_{mode}_server_usec']:>8.1f}"
            )
    print("\n" + "\n".join(lines))
    (artifacts_dir / "ledger_bench.json").write_text(json.dumps(results, indent=2))
