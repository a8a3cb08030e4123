"""Per-platform circuit breakers, kept in Redis so that every worker process shares them.

A platform whose submit fails ``failures`` ticks in a row (an exception, a time-out) is *open*: for
``cooldown`` ticks no evaluation bids on it (nor reserves budget for it), so a platform that is down
costs the fleet neither time-outs nor grants held for nothing. The tick after that is a trial
(*half-open*): evaluations bid on it again; one success closes the breaker, a failure opens it for
another ``cooldown`` ticks. Counting in ticks, not calls, keeps a fleet of many groups per tick from
opening it on one bad moment: all the failures of one tick are one failing tick.

State per platform: ``keys.platform_breaker``, changed only by ``lua/breaker.lua``. Evaluations read
every platform's breaker with their campaigns (one extra command per platform in a round trip they
make anyway), and report to it only what changes it: failures, and successes while not clean.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from common import keys
from common.redis_conn import Client, store_call

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Breaker:
    """One platform's breaker as stored; ``state_at(tick)`` tells whether a tick may bid on it."""

    platform: str
    state: str = CLOSED
    failures: int = 0
    open_until: int = 0
    last_failure: int | None = None
    last_success: int | None = None
    opened: int = 0
    error: str = ""

    @classmethod
    def from_hash(cls, platform: str, raw: Mapping[str, str]) -> Breaker:
        def number(name: str) -> int | None:
            return int(raw[name]) if raw.get(name) not in (None, "") else None

        return cls(
            platform,
            raw.get("state") or CLOSED,
            number("failures") or 0,
            number("open_until") or 0,
            number("last_failure"),
            number("last_success"),
            number("opened") or 0,
            raw.get("error", ""),
        )

    def state_at(self, tick: int) -> str:
        """closed; open (skip the platform this tick); or half_open (this tick tries it again)."""
        if self.state != OPEN:
            return CLOSED
        return OPEN if tick < self.open_until else HALF_OPEN

    @property
    def clean(self) -> bool:
        """Nothing for a success to reset."""
        return self.state == CLOSED and self.failures == 0


@cache
def _source() -> str:
    return resources.files(__package__).joinpath("lua", "breaker.lua").read_text(encoding="utf-8")


def queue_read(pipe: Any, platforms: Iterable[str]) -> None:
    """Queue the read of each platform's breaker on a caller's pipeline; ``parse`` reads the replies."""
    for pid in platforms:
        pipe.hgetall(keys.platform_breaker(pid))


def parse(platforms: Iterable[str], replies: Iterable[Mapping[str, str]]) -> dict[str, Breaker]:
    return {pid: Breaker.from_hash(pid, raw) for pid, raw in zip(platforms, replies, strict=True)}


@store_call("read the platforms' breakers")
def read(client: Client, platforms: Iterable[str]) -> dict[str, Breaker]:
    pids = list(platforms)
    pipe = client.pipeline(transaction=False)
    queue_read(pipe, pids)
    return parse(pids, pipe.execute())


@store_call("report to a platform's breaker")
def report(
    client: Client, tick: int, outcomes: Mapping[str, str | None], *, failures: int, cooldown: int
) -> dict[str, Breaker]:
    """Record each platform's outcome of ``tick`` (None: ok; else the error); returns the breakers after it.

    Idempotent per (platform, tick, outcome), so it goes through the retrying client.
    """
    if not outcomes:
        return {}
    script = client.register_script(_source())
    pids = list(outcomes)
    pipe = client.pipeline(transaction=False)
    for pid in pids:
        error = outcomes[pid]
        args = [tick, "ok" if error is None else "failed", failures, cooldown, (error or "")[:200]]
        script(keys=[keys.platform_breaker(pid)], args=args, client=pipe)
    replies = pipe.execute()
    after = {}
    for pid, (state, count, open_until) in zip(pids, replies, strict=True):
        after[pid] = Breaker(pid, str(state), int(count), int(open_until))
        if outcomes[pid] is not None and state == OPEN and int(open_until) == tick + 1 + cooldown:
            log.warning(
                "platform %s failed %d ticks running: skipped until tick %d",
                pid, int(count), int(open_until), extra={"tick": tick, "platform": pid},
            )  # fmt: skip
    return after
