"""Measurements that know nothing of campaigns: percentiles, process CPU and memory, Redis INFO.

CPU is read as cumulative user + system seconds, here for a process tree (psutil) and from Redis's
``INFO cpu``; a measurement is the difference of two snapshots taken around the measured ticks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil
from redis.cluster import RedisCluster

from common.redis_conn import Client


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def per_thousand(amount: float, count: int) -> float:
    """``amount`` per 1,000 of ``count`` (CPU seconds per 1,000 evaluations); 0 when nothing was counted."""
    return amount / count * 1000 if count else 0.0


@dataclass(frozen=True)
class TreeSnapshot:
    """CPU seconds so far of a process (``root``) and of each of its descendants, by pid."""

    root: float
    children: dict[int, float]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def tree_snapshot(pid: int) -> TreeSnapshot:
    """CPU of ``pid`` and its descendants (a Celery worker and its pool processes)."""
    root = psutil.Process(pid)
    children: dict[int, float] = {}
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            children[child.pid] = _cpu(child)
    return TreeSnapshot(_cpu(root), children)


def tree_delta(before: TreeSnapshot, after: TreeSnapshot) -> tuple[float, float]:
    """CPU seconds (root, descendants) spent between two snapshots.

    A descendant started in between counts from zero; one that exited in between is lost.
    """
    children = sum(cpu - before.children.get(pid, 0.0) for pid, cpu in after.children.items())
    return after.root - before.root, children


def rss_mb(pid: int, *, descendants: bool) -> list[float]:
    """Resident memory in MB of ``pid`` itself, or of each of its descendants."""
    root = psutil.Process(pid)
    processes = root.children(recursive=True) if descendants else [root]
    sizes = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(process.memory_info().rss / 2**20)
    return sizes


def redis_cpu(client: Client) -> float:
    """The server's CPU seconds so far (main thread and background), from ``INFO cpu``; a cluster's, summed."""
    return sum(redis_cpu_by_node(client).values())


def redis_cpu_by_node(client: Client) -> dict[str, float]:
    """``redis_cpu`` of each server: the one, or every primary of a cluster (by ``host:port``)."""
    return {
        name: float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for name, info in _infos(client, "cpu").items()
    }


def redis_memory(client: Client) -> int:
    """Bytes the server's allocator holds for data and overhead (``INFO memory`` used_memory); a cluster's, summed."""
    return sum(int(info["used_memory"]) for info in _infos(client, "memory").values())


def _infos(client: Client, section: str) -> dict[str, dict[str, Any]]:
    """``INFO section`` of the server, or of every primary of a cluster, by ``host:port``."""
    if isinstance(client, RedisCluster):
        replies: dict[str, dict[str, Any]] = client.info(section, target_nodes=RedisCluster.PRIMARIES)
        return replies
    info: dict[str, Any] = client.info(section)  # type: ignore[assignment]
    kwargs = client.connection_pool.connection_kwargs
    return {f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}": info}
