"""Redis killed (SIGKILL) and restarted from its AOF in the middle of a run, with appendfsync always.

Two threads keep reserving, submitting, settling and adjusting; a call that fails is repeated until it
succeeds, which the ledger's idempotency makes safe. Some submitted reservations are never settled,
as when an evaluation dies after bidding. After a final crash and restart every result the ledger
acknowledged must be in the data (an acknowledged submit above all: a reservation that fell back
to open could be released although its bids spent it), the scripts must have been reloaded
(NOSCRIPT seen and handled), and every invariant must hold once the sweep has charged the
abandoned ones.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cli.redis_server import RedisServer
from common import keys
from common.errors import StoreUnavailable
from common.ledger import Grant, Ledger, Settlement, Swept
from tests.ledger_helpers import audit_all, make_campaign

T = TypeVar("T")
TICKS = 120
RESTART_AT = (25, 55, 85)  # ticks both threads have reached when Redis is killed


@dataclass
class Acks:
    grants: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    submitted: set[tuple[str, int]] = field(default_factory=set)
    settled: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    adjusts: dict[tuple[str, str], int] = field(default_factory=dict)
    calls: int = 0
    failures: int = 0
    tick: int = 0


def until_done(acks: Acks, fn: Callable[[], T]) -> T:
    """Repeat a ledger call until Redis answers: safe because every call is idempotent."""
    for _ in range(500):
        try:
            result = fn()
        except StoreUnavailable:
            acks.failures += 1
            time.sleep(0.02)
            continue
        acks.calls += 1
        return result
    raise AssertionError("Redis did not come back")


def _one_or_many(
    acks: Acks, tick: int, one: Callable[..., Any], many: Callable[[list[Any]], list[Any]], requests: list[Any]
) -> list[Any]:
    """Odd ticks make one call per request, even ticks one batched call: both paths meet the restarts."""
    if tick % 2:
        return [until_done(acks, lambda r=r: one(*r)) for r in requests]  # type: ignore[misc]
    return until_done(acks, lambda: many(requests))


def drive(ledger: Ledger, cids: list[str], seed: int, acks: Acks, gates: list[threading.Event]) -> None:
    """Reserve, submit and settle every tick for ``cids``; a little after each restart point, wait for it.

    Every seventh tick the first campaign's submitted reservation is left unsettled.
    """
    rng = random.Random(seed)
    for tick in range(TICKS):
        for at, gate in zip(RESTART_AT, gates, strict=True):
            if tick == at + 10 and not gate.wait(30):
                return
        acks.tick = tick
        requests = [(cid, tick, {"a": rng.randint(0, 500), "b": rng.randint(0, 500)}) for cid in cids]
        grants = _one_or_many(acks, tick, ledger.reserve, ledger.reserve_many, requests)
        for g in grants:
            assert isinstance(g, Grant), g
            acks.grants[g.campaign, g.tick] = g.granted
        pairs = [(cid, tick) for cid in cids]
        subs = _one_or_many(acks, tick, ledger.submit, ledger.submit_many, pairs)
        costs = []
        for g in subs:
            # A replay is possible here: a client retry after the server ran the first submit.
            assert isinstance(g, Grant) and g.state == "submitted", g
            acks.submitted.add((g.campaign, g.tick))
            if not (tick % 7 == 3 and g.campaign == cids[0]):
                costs.append((g.campaign, tick, {p: rng.randint(0, v) for p, v in g.granted.items()}))
        settled = _one_or_many(acks, tick, ledger.settle, ledger.settle_many, costs)
        for s in settled:
            assert isinstance(s, Settlement), s
            acks.settled[s.campaign, s.tick] = s.spent
        if tick % 10 == 5:
            cid, op = rng.choice(cids), f"op-{seed}-{tick}"
            until_done(acks, lambda cid=cid, op=op: ledger.adjust(cid, 1_000, op_id=op))  # type: ignore[misc]
            acks.adjusts[cid, op] = 1_000


def _noscript_errors(client: redis.Redis) -> int:
    """NOSCRIPT replies since the server (re)started: each one is a script the ledger reloaded."""
    errors: dict[str, Any] = client.info("errorstats")
    return int(errors.get("errorstat_NOSCRIPT", {}).get("count", 0))


def _crash_and_restart(server: RedisServer) -> None:
    server.kill()
    server.start()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_crash_restart_keeps_every_acknowledged_movement(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync="always").start()
    client = redis.Redis(port=server.port, decode_responses=True, socket_timeout=5)
    # One thread's client retries inside redis-py (the default), the other's does not, so that its
    # calls fail with StoreUnavailable during the outage and are repeated by the caller.
    bare = redis.Redis(port=server.port, decode_responses=True, socket_timeout=5, retry=Retry(NoBackoff(), 0))
    gates = [threading.Event() for _ in RESTART_AT]
    try:
        ledger = Ledger(client)
        cids = [f"r{i}" for i in range(8)]
        for cid in cids:
            make_campaign(client, cid)
            ledger.open(cid, 40_000_000)
        groups = [cids[:4], cids[4:]]
        acks = [Acks(), Acks()]
        threads = [
            threading.Thread(target=drive, args=(lg, groups[i], i, acks[i], gates), daemon=True)
            for i, lg in enumerate([ledger, Ledger(bare)])
        ]
        for t in threads:
            t.start()

        # Crash while both threads are between a restart point and their gate ten ticks later.
        noscript = 0
        deadline = time.monotonic() + 90
        for at, gate in zip(RESTART_AT, gates, strict=True):
            while min(a.tick for a in acks) < at:
                assert time.monotonic() < deadline and all(t.is_alive() for t in threads)
                time.sleep(0.005)
            noscript += _noscript_errors(client)
            _crash_and_restart(server)
            gate.set()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads)
        assert acks[1].failures > 0, "the thread without client retries never saw the outage"
        noscript += _noscript_errors(client)
        assert noscript > 0, "scripts were never reloaded after a restart"

        # The last crash: everything acknowledged so far must come back from the AOF.
        _crash_and_restart(server)
        for a in acks:
            assert len(a.submitted) == len(a.grants) == len(cids) // 2 * TICKS
            assert len(a.settled) == len(a.grants) - len(range(3, TICKS, 7))
            for cid, tick in a.submitted - a.settled.keys():
                assert client.hget(keys.reservation(cid, tick), "state") == "submitted", (cid, tick)
            for (cid, tick), granted in a.grants.items():
                record = client.hgetall(keys.reservation(cid, tick))
                assert {p: int(record[f"g:{p}"]) for p in granted} == granted, (cid, tick)
            for (cid, tick), spent in a.settled.items():
                record = client.hgetall(keys.reservation(cid, tick))
                assert record["state"] == "settled", (cid, tick)
                assert {p: int(record[f"c:{p}"]) for p in spent} == spent, (cid, tick)
            for (cid, op), delta in a.adjusts.items():
                assert client.hget(keys.adjustments(cid), op) == str(delta), (cid, op)
        abandoned = sum(len(a.submitted - a.settled.keys()) for a in acks)
        assert Ledger(client).sweep(cids, TICKS) == Swept(charged=abandoned)
        found = audit_all(client, cids, expect_open=False)
        raised = {cid: 0 for cid in cids}
        for (cid, _), delta in (acks[0].adjusts | acks[1].adjusts).items():
            raised[cid] += delta
        assert {cid: a.balance.budget for cid, a in found.items()} == {c: 40_000_000 + d for c, d in raised.items()}
    finally:
        for gate in gates:
            gate.set()
        client.close()
        bare.close()
        server.stop()
