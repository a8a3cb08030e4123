"""Redis clients for the state store, and the one translation of their failures into ``StoreUnavailable``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import redis
from redis.exceptions import ClusterError, OutOfMemoryError, ReadOnlyError, SlotNotCoveredError, TryAgainError

from common.errors import StoreUnavailable

# redis-py's stubs take mappings with invariant key types; field maps are passed as this.
Fields = dict[Any, Any]

P = ParamSpec("P")
R = TypeVar("R")


def connect(url: str) -> redis.Redis:
    """A client that decodes responses to ``str``; health-checked, with short connect timeouts."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
    )


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


def store_call(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``translated_errors`` around every call of the decorated function."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with translated_errors(what):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
