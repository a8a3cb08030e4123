"""What the HTTP API holds for its lifetime: settings, Redis clients and the fleet's Celery app.

Reads of the fleet's time never write: the API derives the current tick from the epoch the fleet
stored, so starting the API before any worker does not start the fleet's clock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import Celery

from common import keys
from common.fleet.feed import FeedStore
from common.fleet.store import CampaignStore
from common.redis_conn import Client, connect, store_call, without_retries
from common.settings import Settings

log = logging.getLogger(__name__)

# Celery's Redis transport keeps a queue in one list per priority step: the plain name holds the
# default priority, "<name>\x06\x16<n>" the others.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
PING_TIMEOUT = 0.5
WORKERS_CACHE_SECONDS = 3.0
# The health probe of Redis answers within this long, also while Redis hangs (paused, swapping).
PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class TickInfo:
    """The fleet's time as seen now: the newest tick that ran and how long ago it started."""

    last: int | None
    epoch: float | None
    tick_seconds: float
    now: float

    @property
    def current(self) -> int:
        """The tick under way by the wall clock (the last tick that ran when the epoch is unknown)."""
        if self.epoch is None:
            return self.last or 0
        return max(0, math.floor((self.now - self.epoch) / self.tick_seconds + 1e-3))

    @property
    def age_seconds(self) -> float | None:
        """Seconds since the newest tick that ran was due to start."""
        if self.last is None or self.epoch is None:
            return None
        return max(0.0, self.now - (self.epoch + self.last * self.tick_seconds))

    @property
    def stale_after(self) -> float:
        """An age past which the fleet is considered stopped: five ticks, and never under 10 s."""
        return max(10.0, 5 * self.tick_seconds)


@dataclass(frozen=True)
class Workers:
    names: list[str]
    error: str | None = None

    @property
    def online(self) -> int:
        return len(self.names)


class ApiContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.r = connect(settings.state_url)
        self._ping_lock = threading.Lock()
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-ping")
        self._ping: Future[list[str]] | None = None
        self._workers: tuple[float, Workers] | None = None
        self._failing: dict[str, float] = {}

    @cached_property
    def probe(self) -> Client:
        """The state store with a short time-out and no retries: /health says at once that it is down."""
        return without_retries(self.r, socket_timeout=PROBE_TIMEOUT)

    def failing_since(self, what: str, failing: bool, now: float) -> float | None:
        """When this process first saw ``what`` failing in the run that is still going on; None when it is fine.

        The API's own memory: after a restart of the API it counts from its first look.
        """
        if not failing:
            self._failing.pop(what, None)
            return None
        return self._failing.setdefault(what, now)

    @cached_property
    def store(self) -> CampaignStore:
        return CampaignStore(self.r)

    @cached_property
    def feed(self) -> FeedStore:
        return FeedStore(self.r)

    @cached_property
    def celery(self) -> Celery:
        from worker.app import create_app

        app = create_app(self.settings)
        # A broker that is down must not hold a health check: fail fast instead of retrying.
        app.conf.broker_connection_timeout = 2.0
        app.conf.broker_connection_max_retries = 1
        return app

    @cached_property
    def broker(self) -> Client | None:
        """A client of the broker's Redis, to measure queue depth; None for a non-Redis broker."""
        url = self.settings.broker
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        return self.r if url == self.settings.state_url else connect(url)

    def tick_info(self) -> TickInfo:
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(keys.CLOCK, ["epoch", "tick_seconds"])
        pipe.get(keys.LAST_TICK)
        (epoch, tick_seconds), last = pipe.execute()
        return TickInfo(
            last=None if last is None else int(last),
            epoch=None if epoch is None else float(epoch),
            tick_seconds=float(tick_seconds) if tick_seconds else self.settings.tick_seconds,
            now=time.time(),
        )

    @cached_property
    def broker_probe(self) -> Client | None:
        """The broker's Redis with the probe's short time-out and no retries: a broker that is down
        makes ``/health`` say so at once instead of holding it through the client's retries."""
        if self.broker is None:
            return None
        return self.probe if self.broker is self.r else without_retries(self.broker, socket_timeout=PROBE_TIMEOUT)

    @store_call("read the queue depth on the broker")
    def queue_depth(self) -> dict[str, int] | None:
        """Messages waiting per queue; ``StoreUnavailable`` when the broker's Redis cannot be reached."""
        from worker.app import QUEUES

        if self.broker_probe is None:
            return None
        pipe = self.broker_probe.pipeline(transaction=False)
        for queue in QUEUES:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        lengths = pipe.execute()
        step = len(_PRIORITY_SUFFIXES)
        return {q: sum(lengths[i * step : (i + 1) * step]) for i, q in enumerate(QUEUES)}

    def workers(self) -> Workers:
        """Workers that answered a ping, cached for a few seconds; one ping runs at a time."""
        with self._ping_lock:
            if self._workers is not None and time.monotonic() - self._workers[0] < WORKERS_CACHE_SECONDS:
                return self._workers[1]
            if self._ping is None or self._ping.done():
                self._ping = self._pinger.submit(self._ping_workers)
            ping = self._ping
        try:
            result = Workers(sorted(ping.result(timeout=PING_TIMEOUT + 2.5)))
        except FutureTimeout:
            result = Workers([], "the broker did not answer the ping in time")
        except Exception as exc:  # a broker error of any kind means: no worker can be seen
            log.warning("worker ping failed: %s", exc)
            result = Workers([], f"ping failed: {type(exc).__name__}")
        with self._ping_lock:
            self._workers = (time.monotonic(), result)
        return result

    def _ping_workers(self) -> list[str]:
        replies: list[dict[str, Any]] = self.celery.control.ping(timeout=PING_TIMEOUT) or []
        return [name for reply in replies for name in reply]

    def close(self) -> None:
        self._pinger.shutdown(wait=False, cancel_futures=True)
        if "celery" in self.__dict__:
            self.celery.close()
        if "broker" in self.__dict__ and self.broker is not None and self.broker is not self.r:
            self.broker.close()
        probe = self.__dict__.get("broker_probe")
        if probe is not None and probe is not self.__dict__.get("probe"):
            probe.close()
        if "probe" in self.__dict__:
            self.probe.close()
        self.r.close()
