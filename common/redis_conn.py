"""Redis clients for the state store, and the one translation of their failures into ``StoreUnavailable``.

The state store is one Redis server (``redis://host:port/db``) or a Redis Cluster
(``redis+cluster://host:port``, ``rediss+cluster://`` with TLS: any node, from which the client
discovers the others). Every campaign key carries its campaign's hash tag and every multi-key
command the engine sends stays inside one slot, so the same code runs on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from common.errors import StoreUnavailable

# redis-py's stubs take mappings with invariant key types; field maps are passed as this.
Fields = dict[Any, Any]

# The state store's client: one server or a cluster; both take the same commands and pipelines.
Client: TypeAlias = redis.Redis | RedisCluster
AsyncClient: TypeAlias = redis.asyncio.Redis | AsyncRedisCluster

P = ParamSpec("P")
R = TypeVar("R")

# URL schemes naming a Redis Cluster, and the scheme its nodes are reached with.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

# Client retries. redis-py sends a command (or a whole pipeline) again after a connection error or a
# timeout, up to RETRIES times with exponential backoff: 10 ms doubling up to 1 s with jitter (redis-py's
# own default since 6.0, spelled out here). A retried command may already have run on the server (the
# reply was lost, or a paused server runs it when it wakes), so every command sent through a retrying
# client must be idempotent: the ledger's scripts (per campaign and tick, or operation id), SET/HSET of
# whole values, the claims and marks that carry their claimer's token (``claim_token``), the campaign
# state's script (once per campaign and tick). Increments and stream appends are not: the fleet sends
# them through ``without_retries`` (tick counters, metrics, the decision stream, tick summaries), where a
# lost reply loses a count instead of doubling it. docs/operations.md lists them.
RETRIES = 10
RETRY_BACKOFF = (0.01, 1.0)


def _retry() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=RETRY_BACKOFF[0], cap=RETRY_BACKOFF[1]), RETRIES)


_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 30,
    "health_check_interval": 30,
}


def cluster_node_url(url: str) -> str | None:
    """For a cluster URL, the plain URL of the node it names; None for a single server's URL."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return None if scheme is None else urlunsplit(parts._replace(scheme=scheme))


def connect(url: str) -> Client:
    """A client that decodes responses to ``str``; health-checked, with short connect timeouts.

    A cluster client asks its first node for the slot map at once (a single server's client
    connects at its first command), so an unreachable cluster raises ``StoreUnavailable`` here.
    """
    node = cluster_node_url(url)
    if node is None:
        return redis.Redis.from_url(url, retry=_retry(), **_OPTIONS)
    with translated_errors("connect to the Redis Cluster"):
        return RedisCluster.from_url(node, retry=_retry(), **_OPTIONS)


def connect_async(url: str) -> AsyncClient:
    """``connect`` for asyncio code, with the same options (and redis-py's default retries)."""
    node = cluster_node_url(url)
    if node is None:
        return redis.asyncio.Redis.from_url(url, **_OPTIONS)
    return AsyncRedisCluster.from_url(node, **_OPTIONS)


def without_retries(client: Client, socket_timeout: float | None = None) -> Client:
    """A client of the same server that sends each command once: for increments and stream appends,
    and (with a short ``socket_timeout``) for probes that must answer quickly while Redis is down.

    It has a connection pool of its own, with the options of ``client``'s but no retry. A cluster
    client is returned as it is: redis-py's cluster client retries on its own terms (slot map
    refreshes), so on a cluster a lost reply can still count an increment twice (docs/operations.md).
    """
    if isinstance(client, RedisCluster):
        return client
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs) | {"retry": Retry(NoBackoff(), 0)}
    if socket_timeout is not None:
        kwargs |= {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    # from_pool: closing the client closes its pool too.
    return redis.Redis.from_pool(redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def queue_claim(pipe: Any, key: str, token: str, ttl: int) -> None:
    """Queue a claim of ``key`` for ``token`` (``SET NX`` then ``GET``); ``claimed`` reads its two replies.

    The claim is the key's value, not the reply of ``SET NX``: a client retry of a claim that had
    already taken the key gets "not set" from ``SET NX``, but reads its own token back, and knows the
    claim is its own. Another claimer reads a different token.
    """
    pipe.set(key, token, nx=True, ex=ttl)
    pipe.get(key)


def claimed(replies: list[Any], token: str) -> bool:
    """Whether the two replies of ``queue_claim`` (``SET NX``, ``GET``) say ``token`` holds the key."""
    value = replies[1]
    return (value.decode() if isinstance(value, bytes) else value) == token


def claim(client: Client, key: str, token: str, ttl: int) -> bool:
    """Claim ``key`` for ``token`` in one round trip; True when it is ``token``'s, also on a retry."""
    pipe = client.pipeline(transaction=False)
    queue_claim(pipe, key, token, ttl)
    return claimed(pipe.execute(), token)


# Failures of the store itself, which a later call may not meet: the caller can retry, settle later, or
# answer 503. Any other Redis error (a wrong command or argument, a key of the wrong type, keys in
# different hash slots, a Lua error) is a bug in the engine or damaged data: it propagates as it is.
UNAVAILABLE: tuple[type[Exception], ...] = (
    # Refused, reset or timed-out connections, a full client table, failed AUTH, and BusyLoadingError:
    # a restarted server still loading its data.
    redis.ConnectionError,
    redis.TimeoutError,
    # A replica answering writes, as the old primary does after a failover.
    ReadOnlyError,
    # maxmemory reached with no key to evict.
    OutOfMemoryError,
    # Redis Cluster: CLUSTERDOWN and MASTERDOWN, redirections exhausted, a slot moving or not served.
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)


def execute_each(pipe: Any) -> list[Any]:
    """Execute a pipeline whose commands concern different campaigns: one error reply stays in its place.

    A reply that says the store itself is failing (read-only, out of memory, loading...) is raised, as
    it concerns every command; any other error reply (a key of the wrong type, a Lua error) is returned
    as its exception for the caller to set that one campaign aside.
    """
    replies: list[Any] = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, UNAVAILABLE):
            raise reply
    return replies


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Re-raise a failure of the store as ``StoreUnavailable`` naming what was being done.

    The one place that decides which Redis errors mean the store is unavailable (``UNAVAILABLE``).
    Put it around a whole operation (its pipeline, its loop of calls), not around each command.
    """
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"{what}: Redis is unavailable ({exc})") from exc
    except RedisClusterException as exc:
        # A cluster client that reaches none of the nodes it knows (at start, or refreshing its slot
        # map) raises this with the connection error as its cause; other causes are bugs.
        if isinstance(exc.__cause__, UNAVAILABLE):
            raise StoreUnavailable(f"{what}: Redis is unavailable ({exc})") from exc
        raise


def store_call(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``translated_errors`` around every call of the decorated function."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with translated_errors(what):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
