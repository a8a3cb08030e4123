"""The Lua files themselves: their headers, their own input checks, and reloading after NOSCRIPT."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from common import keys
from common.ledger import Balance, Ledger
from common.ledger.scripts import NAMES, source
from tests.ledger_helpers import audit, make_campaign, snapshot


def _commandstat(client: redis.Redis, name: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


@pytest.mark.parametrize("name", NAMES)
def test_header_names_keys_argv_and_return(name: str) -> None:
    text = source(name)
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    used = set(re.findall(r"KEYS\[(\d+)\]", text.split("\n\n", 1)[1]))
    declared = set(re.findall(r"^-- KEYS\[(\d+)\]", header, re.MULTILINE))
    assert used and used == declared, f"{name}.lua uses KEYS {sorted(used)} but its header names {sorted(declared)}"
    assert re.search(r"^-- ARGV\[1\]", header, re.MULTILINE)
    assert "Returns" in header
    # Keys come in through KEYS only: no key is spelled inside a script.
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    assert "{c:" not in body and "ce:" not in body


@pytest.mark.parametrize("tick", ["-1", "1e3", "0x10", " 5", "5.0", "", "99999999999999999"])
def test_scripts_check_their_own_arguments(r: redis.Redis, tick: str) -> None:
    """Another tool calling the scripts directly gets the same refusals and no writes."""
    make_campaign(r, "c1")
    Ledger(r).open("c1", 100)
    before = snapshot(r)
    reserve = r.register_script(source("reserve"))
    rkeys = [
        keys.campaign("c1"),
        keys.budget("c1"),
        keys.reservation("c1", 1),
        keys.reservations("c1"),
        keys.ledger("c1"),
    ]
    with pytest.raises(redis.ResponseError, match=r"^LEDGER bad_input tick"):
        reserve(keys=rkeys, args=[tick, "a", "1"])
    with pytest.raises(redis.ResponseError, match=r"^LEDGER bad_input caps\.a"):
        reserve(keys=rkeys, args=["1", "a", tick])
    submit = r.register_script(source("submit"))
    with pytest.raises(redis.ResponseError, match=r"^LEDGER bad_input tick"):
        submit(keys=[keys.budget("c1"), keys.reservation("c1", 1)], args=[tick])
    assert snapshot(r) == before


def test_release_takes_only_the_sweep_mode(r: redis.Redis) -> None:
    """release.lua charges a submitted reservation only when told it is the sweeper; other modes are refused."""
    make_campaign(r, "c1")
    ledger = Ledger(r)
    ledger.open("c1", 100)
    ledger.reserve("c1", 1, {"a": 40})
    ledger.submit("c1", 1)
    release = r.register_script(source("release"))
    rkeys = [keys.budget("c1"), keys.reservation("c1", 1), keys.reservations("c1"), keys.ledger("c1")]
    before = snapshot(r)
    for mode in ("", "Sweep", "charge"):
        with pytest.raises(redis.ResponseError, match=r"^LEDGER bad_input mode"):
            release(keys=rkeys, args=["1", mode])
    with pytest.raises(redis.ResponseError, match=r"^LEDGER submitted"):
        release(keys=rkeys, args=["1"])
    assert snapshot(r) == before
    assert release(keys=rkeys, args=["1", "sweep"]) == ["charged", 40]
    assert release(keys=rkeys, args=["1", "sweep"]) == ["settled", 0]
    assert ledger.balance("c1") == Balance(100, 60, 0, 40)
    audit(r, "c1", expect_open=False)


def test_single_calls_reload_scripts_after_a_flush(r: redis.Redis) -> None:
    ledger = Ledger(r)
    make_campaign(r, "c1")
    ledger.open("c1", 100)
    r.script_flush()
    assert ledger.reserve("c1", 0, {"a": 40}).granted == {"a": 40}
    r.script_flush()
    assert ledger.submit("c1", 0).usable
    r.script_flush()
    assert ledger.settle("c1", 0, {"a": 10}).total == 10
    r.script_flush()
    assert ledger.adjust("c1", 5) == Balance(105, 95, 0, 10)
    audit(r, "c1", expect_open=False)


def test_batches_reload_scripts_after_a_flush_without_running_twice(r: redis.Redis) -> None:
    ledger = Ledger(r)
    cids = [f"c{i}" for i in range(20)]
    for cid in cids:
        make_campaign(r, cid)
        ledger.open(cid, 100)
    r.script_flush()
    grants = ledger.reserve_many([(cid, 0, {"a": 30}) for cid in cids])
    assert all(not isinstance(g, Exception) and not g.replay for g in grants)
    r.script_flush()
    submitted = ledger.submit_many([(cid, 0) for cid in cids])
    assert all(not isinstance(g, Exception) and g.usable for g in submitted)
    r.script_flush()
    settled = ledger.settle_many([(cid, 0, {"a": 30}) for cid in cids])
    assert all(not isinstance(s, Exception) and not s.replay for s in settled)
    for cid in cids:
        assert audit(r, cid, expect_open=False).sums == {"adjust": 100, "reserve": 30, "settle": 30}


def test_batches_do_not_ask_script_exists_each_time(r: redis.Redis) -> None:
    """redis-py's pipeline would send SCRIPT EXISTS before every batch; ours only reacts to NOSCRIPT."""
    ledger = Ledger(r)
    make_campaign(r, "c1")
    ledger.open("c1", 1000)
    ledger.reserve_many([("c1", 0, {"a": 1})])
    exists_before = _commandstat(r, "script|exists")
    for tick in range(1, 6):
        ledger.reserve_many([("c1", tick, {"a": 1})])
    assert _commandstat(r, "script|exists") == exists_before


def test_redis_py_pipeline_scripts_survive_a_flush(r: redis.Redis) -> None:
    """What redis-py does on its own, checked rather than assumed."""
    script = r.register_script("return redis.call('INCR', KEYS[1])")
    assert script(keys=["n"]) == 1
    r.script_flush()
    assert script(keys=["n"]) == 2  # single call: NOSCRIPT -> SCRIPT LOAD -> EVALSHA
    r.script_flush()
    pipe = r.pipeline(transaction=False)
    script(keys=["n"], client=pipe)
    assert pipe.execute() == [3]  # pipeline: SCRIPT EXISTS + SCRIPT LOAD before sending
