"""Redis clients for the state store, built in one place so that errors are translated once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import redis

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


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Re-raise Redis failures as ``StoreUnavailable`` naming what was being done."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(f"{what}: Redis is unreachable ({exc})") from exc


def store_call(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with translated_errors(what):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
