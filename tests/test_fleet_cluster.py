"""The live fleet with its campaign state on a real three-node Redis Cluster and its broker apart.

A Celery worker and beat run with ``CE_REDIS_URL`` naming the cluster (``redis+cluster://``) and
``CE_BROKER_URL`` the single test server: every tick completes, bids are placed, the ledger of every
campaign audits exactly, and the campaigns' keys are spread over the nodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from cli.redis_cluster import LocalCluster
from cli.redis_server import free_port
from common import keys
from common.errors import StoreUnavailable
from common.fleet import decisions
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.tick import begin
from common.redis_conn import connect
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks
from tests.ledger_helpers import audit_all

CAMPAIGNS = 36
TICKS = 5


def test_a_cluster_url_with_no_node_answering_is_store_unavailable() -> None:
    # A cluster client asks for the slot map as it is built: the failure comes from connect itself.
    with pytest.raises(StoreUnavailable, match="connect to the Redis Cluster"):
        connect(f"redis+cluster://127.0.0.1:{free_port()}")


@pytest.mark.slow
def test_live_fleet_on_a_cluster_with_a_separate_broker(
    redis_cluster: LocalCluster, redis_url: str, market: Path, tmp_path: Path
) -> None:
    client = connect(redis_cluster.url)
    client.flushall()
    ids = load_campaigns(client, market, CAMPAIGNS)
    env = fleet_env(redis_cluster.url, tmp_path, market, CE_BROKER_URL=redis_url, CE_CAMPAIGNS_PER_TASK="4")
    assert Settings(redis_url=redis_cluster.url, broker_url=redis_url).broker == redis_url
    with running(env, tmp_path / "logs", concurrency=4) as group:
        wait_for_ticks(client, 1, group, timeout=60)
        start = client.xlen(keys.TICK_STATS)
        entries = [TickStats.from_fields(e) for e in wait_for_ticks(client, start + TICKS, group, timeout=120)]
    ticks = entries[start:]
    assert len(ticks) >= TICKS
    for entry in ticks:
        assert entry.fanned == len(ids), entry
        assert entry.evaluated == len(ids), entry
        assert entry.missed == 0 and entry.late == 0 and entry.dropped == 0, entry
    assert sum(e.bids for e in ticks) > 0
    placed = decisions.parse(client.xrange(keys.DECISIONS))  # type: ignore[arg-type]
    assert {d.campaign for _id, d in placed} <= set(ids) and placed

    # The workers have stopped: whatever they reserved is settled or left for the sweeper, exactly.
    audits = audit_all(client, ids)
    assert sum(a.balance.spent for a in audits.values()) > 0

    # Each campaign's keys live on the node that serves its slot, and the campaigns use every node.
    nodes = {node.port: redis.Redis(port=node.port, decode_responses=True) for node in redis_cluster.nodes}
    used = set()
    for cid in ids:
        port = int(client.get_node_from_key(keys.budget(cid)).port)  # type: ignore[union-attr]
        assert nodes[port].exists(keys.campaign(cid), keys.budget(cid), keys.state(cid)) == 3, cid
        used.add(port)
    assert len(used) == len(nodes), "the campaigns spread over all three nodes"
    # Celery's queues stayed on the broker, and no campaign state went there.
    broker = redis.Redis.from_url(redis_url, decode_responses=True)
    assert not list(broker.scan_iter(match="{c:*", count=1000))
    assert broker.exists("_kombu.binding.evaluations"), "the queues are bound on the broker"
    for key in ("ticks", "evaluations", "_kombu.binding.evaluations"):
        assert not client.exists(key), key
    for node in nodes.values():
        node.close()
    broker.close()
    client.close()


@pytest.mark.slow
def test_a_node_going_down_is_store_unavailable(market: Path, tmp_path: Path) -> None:
    """Commands for the slots of a dead node fail as StoreUnavailable, as a dead single server's do."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        settings = Settings(
            redis_url=cluster.url, broker_url="redis://127.0.0.1:1/0", scenario=market, run_dir=tmp_path
        )
        fleet = Fleet.from_settings(settings)
        ids = load_campaigns(fleet.r, market, 12)
        assert begin(fleet, 1) is not None
        dead = cluster.nodes[1]
        on_dead = [cid for cid in ids if fleet.r.get_node_from_key(keys.budget(cid)).port == dead.port]  # type: ignore[union-attr]
        assert on_dead
        dead.kill()
        with pytest.raises(StoreUnavailable):
            fleet.store.get(on_dead[0])
        with pytest.raises(StoreUnavailable):
            evaluate(fleet, ids, 1)
        fleet.close()
