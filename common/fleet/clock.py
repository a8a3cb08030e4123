"""The fleet's one clock: Redis server time, and tick numbers from it.

Every process reads the time as its own clock plus an offset it measured against Redis (``TIME``),
refreshed every ``REFRESH_SECONDS``. Deadlines, the sweeper's cut-off and tick numbers all come
from this time, so a machine whose clock runs 10 s fast neither numbers ticks ahead of the others
nor sweeps reservations whose evaluations are still under way. One offset measurement costs a
round trip; between measurements the time costs nothing.

Each process publishes its offset in ``ce:clock:offsets`` (field: host and pid; the hash expires
when nobody writes it), which ``/health`` reports as every process's skew.

Tick 0 starts at the fleet's epoch, stored once in Redis (``SET NX``), so that every process, and
two beats started by mistake, agree on the number of the tick under way. Beat fires on multiples
of ``tick_seconds`` since the epoch (see ``beat.schedule``), so the tick task wakes just after
the tick it runs began.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from common import keys
from common.errors import SettingsError, StoreUnavailable
from common.redis_conn import Client, store_call, without_retries

log = logging.getLogger(__name__)

# Seconds between two measurements of the offset; a clock drifts far less than a millisecond in that time.
REFRESH_SECONDS = 30.0
# After a failed measurement (Redis unreachable) the last offset stands; the next try waits this long.
RETRY_SECONDS = 2.0
# A process's published offset is shown for this long after it was measured (then it is gone or stale).
OFFSET_TTL = 120
# A measurement waits this long for Redis, without client retries: a paused Redis must not hold the
# beat or a tick for the client's full time-out and retries; the last offset serves meanwhile.
MEASURE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Offset:
    """One process's measurement: Redis time minus its own clock, and when (in fleet time)."""

    process: str
    offset: float
    at: float
    round_trip: float

    def to_json(self) -> str:
        return json.dumps({"offset": self.offset, "at": self.at, "round_trip": self.round_trip})

    @classmethod
    def from_json(cls, process: str, doc: str) -> Offset:
        raw = json.loads(doc)
        return cls(process, float(raw["offset"]), float(raw["at"]), float(raw["round_trip"]))


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Clock:
    """The fleet's time in this process; ``local`` is this machine's clock (a test gives a skewed one)."""

    def __init__(
        self,
        client: Client,
        tick_seconds: float,
        *,
        local: Callable[[], float] = time.time,
        publish: bool = True,
    ) -> None:
        self.r = client
        self.tick_seconds = tick_seconds
        self.local = local
        self.publish = publish
        self._epoch: float | None = None
        self._probe: Client | None = None
        self._offset: float | None = None
        self._next_measure = 0.0  # monotonic time of the next measurement

    # --- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        """Unix time as Redis tells it: this machine's clock plus the measured offset.

        Never raises: while Redis cannot be reached, the last offset stands (0 before the first).
        """
        if time.monotonic() >= self._next_measure:
            try:
                self.measure()
            except StoreUnavailable as exc:
                self._next_measure = time.monotonic() + RETRY_SECONDS
                log.warning("clock offset not measured, keeping %.3f s: %s", self._offset or 0.0, exc)
        return self.local() + (self._offset or 0.0)

    @property
    def offset(self) -> float | None:
        """Redis time minus this machine's clock, as last measured (None before the first measurement)."""
        return self._offset

    @store_call("measure the clock offset")
    def measure(self) -> float:
        """Measure the offset against Redis ``TIME`` (taken half way through the round trip) and publish it."""
        if self._probe is None:
            self._probe = without_retries(self.r, socket_timeout=MEASURE_TIMEOUT)
        before = self.local()
        started = time.monotonic()
        seconds, micros = self._probe.time()  # type: ignore[misc]
        round_trip = time.monotonic() - started
        after = self.local()
        self._offset = seconds + micros / 1e6 - (before + after) / 2
        self._next_measure = time.monotonic() + REFRESH_SECONDS
        if self.publish:
            measured = Offset(process_name(), self._offset, after + self._offset, round_trip)
            pipe = self._probe.pipeline(transaction=False)
            pipe.hset(keys.CLOCK_OFFSETS, measured.process, measured.to_json())
            pipe.expire(keys.CLOCK_OFFSETS, OFFSET_TTL)
            pipe.execute()
        return self._offset

    def close(self) -> None:
        if self._probe is not None and self._probe is not self.r:
            self._probe.close()
        self._probe = None

    # --- ticks --------------------------------------------------------------------------------
    @store_call("read the clock")
    def epoch(self) -> float:
        """Unix time of tick 0; the first caller sets it, aligned down to a whole tick."""
        if self._epoch is None:
            proposed = self._proposed()
            self.r.hsetnx(keys.CLOCK, "epoch", repr(proposed))
            self.r.hsetnx(keys.CLOCK, "tick_seconds", repr(self.tick_seconds))
            stored: list[str] = self.r.hmget(keys.CLOCK, ["epoch", "tick_seconds"])  # type: ignore[assignment]
            if float(stored[1]) != self.tick_seconds:
                raise SettingsError(
                    f"CE_TICK_SECONDS: this fleet ticks every {stored[1]} s but this process was configured with "
                    f"{self.tick_seconds} s; set CE_TICK_SECONDS alike everywhere"
                )
            self._epoch = float(stored[0])
        return self._epoch

    @store_call("read the clock")
    def stored_epoch(self) -> float | None:
        """The epoch if the fleet's clock has started, without starting it."""
        if self._epoch is None:
            stored: str | None = self.r.hget(keys.CLOCK, "epoch")  # type: ignore[assignment]
            return None if stored is None else float(stored)
        return self._epoch

    def planned_epoch(self) -> float:
        """The epoch, or the one ``epoch()`` would set now, without setting it (to check input first)."""
        stored = self.stored_epoch()
        return self._proposed() if stored is None else stored

    def _proposed(self) -> float:
        return math.floor(self.now() / self.tick_seconds) * self.tick_seconds

    def tick_at(self, now: float) -> int:
        # A small slack absorbs a beat that fires a millisecond early.
        return max(0, math.floor((now - self.epoch()) / self.tick_seconds + 1e-3))

    def current_tick(self) -> int:
        """The tick under way now, by the fleet's time."""
        return self.tick_at(self.now())

    def start_of(self, tick: int) -> float:
        return self.epoch() + tick * self.tick_seconds

    def deadline_of(self, tick: int) -> float:
        """Evaluations of ``tick`` must start before this moment (fleet time), or they bid on stale data."""
        return self.start_of(tick + 1)


@store_call("read the clock offsets")
def offsets(client: Client, now: float) -> list[Offset]:
    """Every process's published offset measured within ``OFFSET_TTL`` seconds of ``now``, by name."""
    raw: dict[str, str] = client.hgetall(keys.CLOCK_OFFSETS)  # type: ignore[assignment]
    found = []
    for process, doc in sorted(raw.items()):
        try:
            entry = Offset.from_json(process, doc)
        except (ValueError, KeyError, TypeError):
            continue
        if now - entry.at <= OFFSET_TTL:
            found.append(entry)
    return found
