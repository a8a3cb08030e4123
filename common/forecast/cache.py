"""Forecasts are computed once per tick and cached in Redis under the tick number.

The tick task fills the cache before it fans out. An evaluation that finds the cache empty (the
tick task is late, or the cache was lost) computes it under a lock, so that a thousand campaigns
missing it at once cause one computation, not a thousand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import redis
from redis.exceptions import LockNotOwnedError

from common import keys
from common.redis_conn import store_call

CACHE_TTL_SECONDS = 3600
LOCK_TTL_MS = 5000


@store_call("read forecasts")
def get_or_compute(
    client: redis.Redis, tick: int, compute: Callable[[], dict[str, Any]], wait_seconds: float = 2.0
) -> dict[str, Any]:
    cached = client.get(keys.forecast(tick))
    if cached is not None:
        return dict(json.loads(cached))
    # redis-py's Lock releases only its own token: a holder whose lock expired while it computed
    # leaves alone the lock a newer holder took since.
    lock = client.lock(keys.forecast_lock(tick), timeout=LOCK_TTL_MS / 1000)
    deadline = time.monotonic() + wait_seconds
    held = lock.acquire(blocking=False)
    while not held:
        # Someone else computes it: wait for their result rather than repeat the work.
        time.sleep(0.005)
        cached = client.get(keys.forecast(tick))
        if cached is not None:
            return dict(json.loads(cached))
        if time.monotonic() > deadline:
            break
        held = lock.acquire(blocking=False)
    try:
        value = compute()
        client.set(keys.forecast(tick), json.dumps(value), nx=True, ex=CACHE_TTL_SECONDS)
        # A racing writer may have won the SET NX: everyone reads back the one stored value.
        stored = client.get(keys.forecast(tick))
        return dict(json.loads(stored)) if stored is not None else value
    finally:
        if held:
            # Expired while computing: nothing of ours is left to release.
            with suppress(LockNotOwnedError):
                lock.release()
