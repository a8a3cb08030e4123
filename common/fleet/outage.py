"""A live tick through an outage of the state store: it keeps trying to begin until its deadline.

Beat fires a tick whatever the state store is doing. When the worker that takes the tick cannot
reach Redis (restarted, failed over, a network blip), failing the task at once would lose the tick
for good: nothing sends it again, and the fleet skips to the next one. Yet the tick is still worth
running until its deadline, the moment its evaluations would be dropped as late: each of them bids
on the feed published before the tick, which is still the newest. So ``begin_live`` tries again every
``RETRY_SECONDS`` until the deadline, and gives up, without raising, once it has passed; the next live
tick then carries on as after any skipped tick (its summary of the tick before finds no counters
and writes nothing).

Every attempt claims the tick with the same token (``common.fleet.tick.claim``): an attempt whose
claim went through before the store failed, or whose reply was lost, finds the claim its own and
goes on, while a second beat's tick still finds it taken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common.errors import StoreUnavailable
from common.fleet import tick as ticks
from common.fleet.fleet import Fleet

log = logging.getLogger(__name__)

# Pause between attempts: short against a tick (2 s by default); each attempt on a refused connection
# already spends the client's own retries (common/redis_conn.py) before it fails.
RETRY_SECONDS = 0.2


def begin_live(
    fleet: Fleet,
    tick: int,
    *,
    deadline: float,
    now: Callable[[], float],
    before: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ticks.TickPlan | None:
    """``ticks.begin`` for a live tick, tried again while the store is unavailable, until ``deadline``.

    ``before`` runs ahead of each attempt (the worker takes stale evaluations off the queue there).
    None when the tick is not to be fanned out: claimed elsewhere, stale, or the store unreachable
    until its deadline.
    """
    token = ticks.claim_token()
    attempts = 0
    while True:
        attempts += 1
        try:
            if before is not None:
                before()
            plan = ticks.begin(fleet, tick, deadline=deadline, now=now, token=token)
        except StoreUnavailable as exc:
            if now() + RETRY_SECONDS >= deadline:
                log.error(
                    "tick %d not run: the state store was unavailable until its deadline (%d attempts): %s",
                    tick, attempts, exc, extra={"tick": tick},
                )  # fmt: skip
                return None
            if attempts == 1:
                log.warning("tick %d: %s; trying again until its deadline", tick, exc, extra={"tick": tick})
            sleep(RETRY_SECONDS)
            continue
        if attempts > 1:
            log.info("tick %d begun after %d attempts", tick, attempts, extra={"tick": tick})
        return plan
