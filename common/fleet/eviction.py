"""Whether the state store may evict the engine's keys: the fleet refuses to run on one that may.

Redis evicts keys only when ``maxmemory`` is set (above 0) and reached, and then picks them by its
``maxmemory-policy``:

- ``noeviction``: never; a write past the limit fails with OOM, which the engine meets as
  ``StoreUnavailable`` and retries: a refused ledger script moves no money.
- ``allkeys-*``: any key, budgets, reservation records and ledger streams included: money would be
  forgotten. Refused.
- ``volatile-*``: only keys with an expiry. No ledger key has one, but the engine's evaluation marks,
  tick claims, forecasts and per-tick counters do: an evicted mark lets a redelivered evaluation run
  twice, an evicted claim lets a tick run twice. Refused too.

So a store is accepted when its ``maxmemory`` is 0 (nothing is ever evicted, whatever the policy) or
its policy is ``noeviction``; on a Redis Cluster, every primary must be. Read from ``INFO memory``,
which managed services serve where ``CONFIG GET`` is disabled. The engine's own state is bounded
(docs/ledger.md, "Bounded state"), so a ``maxmemory`` sized for it with ``noeviction`` is the setup
to choose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.cluster import RedisCluster

from common.errors import SettingsError
from common.redis_conn import Client, translated_errors

SAFE_POLICY = "noeviction"


def problems(client: Client) -> list[str]:
    """One line per server of the state store that may evict keys; empty when none may."""
    with translated_errors("read the memory policy"):
        if isinstance(client, RedisCluster):
            found: Any = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        else:
            found = client.info("memory")
    per_node = found if found and all(isinstance(v, Mapping) for v in found.values()) else {"redis": found}
    lines = []
    for node, info in sorted(per_node.items()):
        limit = int(info.get("maxmemory", 0))
        policy = str(info.get("maxmemory_policy", SAFE_POLICY))
        if limit > 0 and policy != SAFE_POLICY:
            lines.append(
                f"{node}: maxmemory-policy {policy} with maxmemory {limit} may evict the engine's keys "
                f"(budgets under allkeys-*, evaluation marks and tick claims under volatile-*); "
                f"set it to {SAFE_POLICY}, or maxmemory to 0"
            )
    return lines


def check(client: Client) -> None:
    """Raise ``SettingsError`` when the state store may evict keys (``problems``)."""
    found = problems(client)
    if found:
        raise SettingsError("the state store may evict keys: " + "; ".join(found))
