"""The same ledger scripts on a real three-node Redis Cluster: no CROSSSLOT, the same results.

The shared fixture ``redis_cluster`` (``cli/redis_cluster.py``) starts three ``redis-server
--cluster-enabled yes`` nodes and joins them with ``redis-cli --cluster create``; one scenario then
runs on the cluster and on the single test server and must give identical results, batches
spanning every node included.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from cli.redis_cluster import LocalCluster
from common import keys
from common.errors import LedgerError
from common.ledger import Ledger, compaction
from tests.ledger_helpers import audit_all, make_campaign

CAMPAIGNS = [f"k{i}" for i in range(30)]


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A client of the shared test cluster (``tests/conftest.py``)."""
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port, decode_responses=True)
    yield client
    client.close()


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        result = fn(*args, **kwargs)
    except LedgerError as exc:
        return (type(exc).__name__, str(exc))
    if isinstance(result, list):
        return [(type(x).__name__, str(x)) if isinstance(x, LedgerError) else x for x in result]
    return result


def scenario(client: Any) -> list[Any]:
    """Every operation, refusals and batches over many slots included; returns what each call gave."""
    ledger = Ledger(client)
    out: list[Any] = []
    for i, cid in enumerate(CAMPAIGNS):
        make_campaign(client, cid, status="paused" if i % 7 == 3 else "active", start_tick=i % 3, end_tick=20)
        out.append(_outcome(ledger.open, cid, 10_000 + 1_000 * i))
    for tick in range(6):
        out.append(_outcome(ledger.reserve_many, [(cid, tick, {"a": 900 + tick, "b": 2_000}) for cid in CAMPAIGNS]))
        out.append(_outcome(ledger.submit_many, [(cid, tick) for cid in CAMPAIGNS[1::3]]))  # some left to the sweep
        costs = [(cid, tick, {"a": 450 + i, "b": 3 * i}) for i, cid in enumerate(CAMPAIGNS)]
        if tick % 3 == 1:
            out.append(_outcome(ledger.settle, CAMPAIGNS[0], tick, {"a": 10**6}))
            out.append(_outcome(ledger.release, CAMPAIGNS[1], tick))  # submitted: refused
            out.append(_outcome(ledger.release, CAMPAIGNS[2], tick))
            out.append(_outcome(ledger.submit, CAMPAIGNS[2], tick))  # released: refused
        if tick % 2:
            out.append(_outcome(ledger.settle_many, costs))
        out.append(_outcome(ledger.reserve, CAMPAIGNS[tick], tick, {"c": 5}))
        out.append(_outcome(ledger.adjust, CAMPAIGNS[tick], -(tick + 1) * 1_000, op_id=f"op{tick}"))
        out.append(_outcome(ledger.settle_many, costs if tick % 2 else costs[::2]))  # leave some for the sweep
    out.append(_outcome(ledger.sweep, CAMPAIGNS, 4))
    out.append(_outcome(ledger.balances, CAMPAIGNS))
    return out


def test_every_ledger_key_of_a_campaign_shares_one_slot() -> None:
    for cid in CAMPAIGNS:
        campaign_keys = [
            keys.campaign(cid),
            keys.budget(cid),
            keys.reservation(cid, 17),
            keys.reservations(cid),
            keys.ledger(cid),
            keys.adjustments(cid),
        ]
        assert len({key_slot(k.encode()) for k in campaign_keys}) == 1


@pytest.mark.slow
def test_cluster_gives_the_same_results_as_one_server(cluster: RedisCluster, r: redis.Redis) -> None:
    cluster.flushall()
    slots = {cluster.get_node_from_key(keys.budget(cid)).name for cid in CAMPAIGNS}
    assert len(slots) == 3, "the campaigns should spread over all three nodes"
    on_cluster = scenario(cluster)
    on_one_server = scenario(r)
    assert on_cluster == on_one_server
    audit_all(cluster, CAMPAIGNS)
    swept = Ledger(cluster).sweep(CAMPAIGNS, 100)
    assert swept.released > 0 and swept.charged > 0, swept
    assert swept == Ledger(r).sweep(CAMPAIGNS, 100)
    audit_all(cluster, CAMPAIGNS, expect_open=False)
    # Compaction runs in each campaign's slot too, and gives what it gives on one server.
    compacted = compaction.compact(Ledger(cluster), CAMPAIGNS, 100)
    assert compacted.records > 0 and compacted == compaction.compact(Ledger(r), CAMPAIGNS, 100)
    assert all(a.states == {} for a in audit_all(cluster, CAMPAIGNS, expect_open=False).values())


@pytest.mark.slow
def test_cluster_reloads_scripts_after_a_flush(cluster: RedisCluster) -> None:
    cluster.flushall()
    ledger = Ledger(cluster)
    for cid in CAMPAIGNS:
        make_campaign(cluster, cid)
        ledger.open(cid, 1_000)
    cluster.script_flush()
    grants = ledger.reserve_many([(cid, 0, {"a": 100}) for cid in CAMPAIGNS])
    assert all(not isinstance(g, Exception) and g.granted == {"a": 100} and not g.replay for g in grants)
    cluster.script_flush()
    assert ledger.reserve(CAMPAIGNS[0], 1, {"a": 50}).granted == {"a": 50}
    cluster.script_flush()
    settled = ledger.settle_many([(cid, 0, {"a": 60}) for cid in CAMPAIGNS])
    assert all(
        not isinstance(s, Exception) and s.remaining == (890 if s.campaign == CAMPAIGNS[0] else 940) for s in settled
    )
    audit_all(cluster, CAMPAIGNS)
