"""Forecasts are computed once per tick and cached in Redis under the tick number.

The tick task fills the cache before it fans out. An evaluation that finds the cache empty (the
tick task is late, or the cache was lost) computes it under a lock, so that a thousand campaigns
missing it at once cause one computation, not a thousand.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from redis.exceptions import LockNotOwnedError

from common import keys
from common.forecast.forecasts import METRICS, Forecasts
from common.redis_conn import Client, store_call

CACHE_TTL_SECONDS = 3600
LOCK_TTL_MS = 5000


@dataclass(frozen=True, slots=True)
class TickForecasts:
    """The cached document of a tick: every platform's forecasts and its price spread (``sigmas``).

    Stored as the JSON of ``Forecasts.to_dict()`` with a ``sigmas`` object added, and ``stale``: the
    platforms whose feed was stale when the forecasts were made (common/fleet/staleness.py), each with
    its newest tick of figures (null: none yet); they are forecast from what they have.
    """

    forecasts: Forecasts
    sigmas: dict[str, float]
    stale: dict[str, int | None] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**self.forecasts.to_dict(), "sigmas": self.sigmas, "stale": self.stale})

    @classmethod
    def from_json(cls, text: str | bytes) -> TickForecasts:
        """Parse the document; anything malformed raises ``ValueError``."""
        try:
            doc = json.loads(text)
            sigmas = {str(pid): float(sigma) for pid, sigma in doc["sigmas"].items()}
            stale = {str(pid): None if t is None else int(t) for pid, t in doc.get("stale", {}).items()}
            return cls(Forecasts.from_dict(doc), sigmas, stale)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"not a forecast document: {type(exc).__name__} {exc}") from exc

    def figures(self) -> dict[str, dict[str, float]]:
        """Point forecasts of the tick, ``platform -> {cpc, cvr, volume}``; unknown figures left out.

        An ongoing outage forecasts no volume.
        """
        out: dict[str, dict[str, float]] = {}
        for pid, forecast in self.forecasts.platforms.items():
            values = (*forecast.next[:2], forecast.expected_volume)
            figures = {m: v for m, v in zip(METRICS, values, strict=True) if math.isfinite(v)}
            if figures:
                out[pid] = figures
        return out


@store_call("read forecasts")
def get_or_compute(
    client: Client, tick: int, compute: Callable[[], TickForecasts], wait_seconds: float = 2.0
) -> TickForecasts:
    cached = client.get(keys.forecast(tick))
    if cached is not None:
        return TickForecasts.from_json(cached)
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
            return TickForecasts.from_json(cached)
        if time.monotonic() > deadline:
            break
        held = lock.acquire(blocking=False)
    try:
        text = compute().to_json()
        client.set(keys.forecast(tick), text, nx=True, ex=CACHE_TTL_SECONDS)
        # A racing writer may have won the SET NX: everyone reads back the one stored value.
        stored = client.get(keys.forecast(tick))
        return TickForecasts.from_json(stored if stored is not None else text)
    finally:
        if held:
            # Expired while computing: nothing of ours is left to release.
            with suppress(LockNotOwnedError):
                lock.release()
