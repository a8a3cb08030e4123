"""Worker processes for the ledger hammer test (imported by spawned children, so no pytest here).

A worker fires random reserve/submit/settle/release/adjust calls, single and batched, with duplicates,
at a shared set of campaigns, and bids the way an evaluation does: reserve, submit, spend, settle.

Chaos costs may pass their grants or name platforms never reserved: the ledger charges them in full.
Ticks are split so that the check "the ledger charged at least what was spent" means something:
random settles (any costs, as a buggy or duplicate caller would send) go only to chaos ticks
(``tick % 4 == 0``), where a fresh grant is also settled without submit; on the other (bid) ticks a
fresh grant is submitted and, when the submit is fresh, "spent": the cost is appended to the
worker's spend file and fsynced before settle is called, so what a worker killed between submit and
settle spent survives it. Every settlement the ledger acknowledges is appended to the ack file.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import redis

from common.errors import LedgerError
from common.ledger import Grant, Ledger, Settlement

TICKS = 40  # workers use ticks below this; parked victims the ten above it
PARKED = "test:hammer:parked"  # list of "<seed> <campaign> <tick> <reserved|submitted>"


def is_chaos(tick: int) -> bool:
    return tick % 4 == 0


def _costs(rng: random.Random, granted: Mapping[str, int]) -> dict[str, int]:
    """Mostly within the grant, sometimes above it or on a platform that was not reserved."""
    roll = rng.random()
    if roll < 0.05:
        return {"nowhere": 1}
    if roll < 0.1:
        return {p: g + 1 for p, g in granted.items()}
    return _spend(rng, granted)


def _spend(rng: random.Random, granted: Mapping[str, int]) -> dict[str, int]:
    """What bids capped by the grants may cost: up to each grant, the whole grant fairly often."""
    return {p: g if rng.random() < 0.3 else rng.randint(0, g) for p, g in granted.items() if rng.random() < 0.9}


def _caps(rng: random.Random) -> dict[str, int]:
    platforms = rng.sample(["search", "social", "video", "display"], rng.randint(1, 3))
    return {p: rng.randint(0, 3_000) for p in platforms}


def record_spend(spends: IO[str], grant: Grant, costs: Mapping[str, int]) -> None:
    """Durably note what the bids on ``grant`` cost, before the ledger hears of it."""
    spends.write(f"{grant.campaign} {grant.tick} {sum(costs.values())}\n")
    spends.flush()
    os.fsync(spends.fileno())


def run(
    url: str,
    seed: int,
    cids: Sequence[str],
    ops: int,
    ack_path: str,
    spend_path: str,
    park: tuple[int, str] | None,
) -> None:
    """``park=(op, kind)``: at that op, reserve a tick of its own, submit and spend it too when kind is
    "submitted", announce it on ``PARKED`` and wait to be killed (only the final sweep may close it)."""
    rng = random.Random(seed)
    client = redis.Redis.from_url(url, decode_responses=True)
    ledger = Ledger(client)
    with open(ack_path, "a", buffering=1) as acks, open(spend_path, "a") as spends:

        def ack(result: Settlement | LedgerError) -> None:
            if isinstance(result, Settlement):
                acks.write(f"{result.campaign} {result.tick} {result.total}\n")

        def attempt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except LedgerError as exc:
                return exc

        def bid(grant: Grant) -> None:
            """An evaluation's path after a fresh reserve: submit, bid (spend), settle."""
            submitted = attempt(ledger.submit, grant.campaign, grant.tick)
            if not (isinstance(submitted, Grant) and submitted.usable):
                return  # released or submitted by someone else meanwhile: no bid
            costs = _spend(rng, submitted.granted)
            record_spend(spends, submitted, costs)
            if rng.random() < 0.3:
                time.sleep(0.002)  # the platforms take their time; a kill or a sweep may land here
            # The costs fit the grants, and a sweep that came first makes it a replay; refused only when the
            # sweeper charged it in full and compaction then passed its tick (TickCompacted).
            ack(attempt(ledger.settle, submitted.campaign, submitted.tick, costs))

        def after_reserve(grant: Grant, settle_chance: float) -> None:
            if grant.replay:
                return  # reserved by another call: that one bids, or the sweeper closes it
            if not is_chaos(grant.tick):
                if rng.random() < 0.9:
                    bid(grant)
            elif rng.random() < settle_chance:
                ack(attempt(ledger.settle, grant.campaign, grant.tick, _costs(rng, grant.granted)))

        previous: tuple[Any, ...] | None = None
        for i in range(ops):
            if park is not None and i == park[0]:
                cid, tick = rng.choice(cids), TICKS + seed % 10
                grant = ledger.reserve(cid, tick, _caps(rng))
                assert not grant.replay, grant
                if park[1] == "submitted":
                    submitted = ledger.submit(cid, tick)
                    assert submitted.usable, submitted
                    record_spend(spends, submitted, _spend(rng, submitted.granted))
                client.rpush(PARKED, f"{seed} {cid} {tick} {park[1]}")
                time.sleep(3600)
            cid, tick = rng.choice(cids), rng.randrange(TICKS)
            chaos_tick = rng.randrange(0, TICKS, 4)
            roll = rng.random()
            if roll < 0.05 and previous is not None:
                call = previous  # an exact duplicate, as a redelivered task would be
            elif roll < 0.35:
                call = (ledger.reserve, cid, tick, _caps(rng))
            elif roll < 0.42:
                call = (ledger.submit, cid, tick)  # a stray submit: no bid follows, the sweeper charges it
            elif roll < 0.52:
                call = (ledger.settle, cid, chaos_tick, _costs(rng, {"search": 2_000, "social": 1_000}))
            elif roll < 0.58:
                call = (ledger.release, cid, tick)
            elif roll < 0.75:
                batch = [(rng.choice(cids), rng.randrange(TICKS), _caps(rng)) for _ in range(rng.randint(2, 20))]
                call = (ledger.reserve_many, batch)
            elif roll < 0.8:
                call = (
                    ledger.submit_many,
                    [(rng.choice(cids), rng.randrange(TICKS)) for _ in range(rng.randint(2, 8))],
                )
            elif roll < 0.97:
                batch = [(rng.choice(cids), rng.randrange(0, TICKS, 4), {}) for _ in range(rng.randint(2, 20))]
                call = (ledger.settle_many, batch)
            else:
                call = (ledger.adjust, cid, rng.randint(-5_000, 5_000) or 1)
            previous = call
            result = attempt(*call)
            if isinstance(result, Grant) and call[0] == ledger.reserve:
                after_reserve(result, 0.8)
            elif isinstance(result, Settlement):
                ack(result)
            elif isinstance(result, list):
                for item in result:
                    if isinstance(item, Settlement):
                        ack(item)
                    elif isinstance(item, Grant) and call[0] == ledger.reserve_many:
                        after_reserve(item, 0.5)
    client.close()
