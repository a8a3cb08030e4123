"""The forecast cache under contention: one computation per tick, one document for everyone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from common import keys
from common.forecast import cache
from common.forecast.forecasts import Forecasts

TICK = 12
CALLERS = 8


def _document(computation: int) -> cache.TickForecasts:
    """A tick's document that says which computation made it (in a price spread no platform has)."""
    return cache.TickForecasts(Forecasts(TICK, {}), {"which": float(computation)})


@pytest.fixture
def clients(redis_url: str) -> Iterator[list[redis.Redis]]:
    """One client per caller, as separate worker processes have."""
    made = [redis.Redis.from_url(redis_url, decode_responses=True) for _ in range(CALLERS)]
    yield made
    for client in made:
        client.close()


def test_many_callers_compute_a_tick_once_and_get_the_same_document(r: redis.Redis, clients: list[redis.Redis]) -> None:
    start = threading.Barrier(CALLERS)

    def compute() -> cache.TickForecasts:
        # Counted in Redis, so that it would count computations in other processes too.
        number = int(r.incr("test:computations"))
        time.sleep(0.2)  # long enough for every other caller to find the cache empty
        return _document(number)

    def ask(client: redis.Redis) -> cache.TickForecasts:
        start.wait()
        return cache.get_or_compute(client, TICK, compute)

    with ThreadPoolExecutor(CALLERS) as pool:
        documents = list(pool.map(ask, clients))
    assert r.get("test:computations") == "1"
    assert documents == [_document(1)] * CALLERS
    assert r.get(keys.forecast_lock(TICK)) is None, "the lock is released once the document is stored"


def test_a_holder_whose_lock_expired_leaves_a_newer_holders_lock(
    r: redis.Redis, clients: list[redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "LOCK_TTL_MS", 100)
    holding, finish = threading.Event(), threading.Event()

    def slow() -> cache.TickForecasts:
        holding.set()
        assert finish.wait(5)
        return _document(1)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(cache.get_or_compute, clients[0], TICK, slow)
        assert holding.wait(5)
        time.sleep(0.2)  # the first holder's lock expires while it computes
        newer = clients[1].lock(keys.forecast_lock(TICK), timeout=10)
        assert newer.acquire(blocking=False), "the expired lock is free to take"
        finish.set()
        assert first.result(5) == _document(1)
    assert newer.owned(), "the first holder did not delete the lock it no longer held"
    newer.release()
