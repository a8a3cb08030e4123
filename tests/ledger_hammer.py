"""Worker processes for the ledger hammer test (imported by spawned children, so no pytest here).

A worker fires random reserve/settle/release/adjust calls, single and batched, with duplicates,
at a shared set of campaigns. Every settlement the ledger acknowledges is appended to the
worker's ack file at once, so what a later-killed worker was told survives it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from common.errors import LedgerError
from common.ledger import Grant, Ledger, Settlement

TICKS = 40  # workers use ticks below this; parked victims the ten above it
PARKED = "test:hammer:parked"


def _costs(rng: random.Random, granted: Mapping[str, int]) -> dict[str, int]:
    """Mostly within the grant, sometimes above it or on a platform that was not reserved."""
    roll = rng.random()
    if roll < 0.05:
        return {"nowhere": 1}
    if roll < 0.1:
        return {p: g + 1 for p, g in granted.items()}
    return {p: rng.randint(0, g) for p, g in granted.items() if rng.random() < 0.9}


def _caps(rng: random.Random) -> dict[str, int]:
    platforms = rng.sample(["search", "social", "video", "display"], rng.randint(1, 3))
    return {p: rng.randint(0, 3_000) for p in platforms}


def run(url: str, seed: int, cids: Sequence[str], ops: int, ack_path: str, park_after: int | None) -> None:
    rng = random.Random(seed)
    client = redis.Redis.from_url(url, decode_responses=True)
    ledger = Ledger(client)
    with open(ack_path, "a", buffering=1) as acks:

        def ack(result: Settlement | LedgerError) -> None:
            if isinstance(result, Settlement):
                acks.write(f"{result.campaign} {result.tick} {result.total}\n")

        def attempt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except LedgerError as exc:
                return exc

        previous: tuple[Any, ...] | None = None
        for i in range(ops):
            if i == park_after:
                # Reserve a tick of its own (beyond the others' and the running sweeps' range), say so,
                # and wait to be killed before settling: only the final sweep may release it.
                ledger.reserve(rng.choice(cids), TICKS + seed % 10, _caps(rng))
                client.rpush(PARKED, str(seed))
                time.sleep(3600)
            cid, tick = rng.choice(cids), rng.randrange(TICKS)
            roll = rng.random()
            if roll < 0.05 and previous is not None:
                call = previous  # an exact duplicate, as a redelivered task would be
            elif roll < 0.4:
                call = (ledger.reserve, cid, tick, _caps(rng))
            elif roll < 0.55:
                call = (ledger.settle, cid, tick, _costs(rng, {"search": 2_000, "social": 1_000}))
            elif roll < 0.62:
                call = (ledger.release, cid, tick)
            elif roll < 0.8:
                batch = [(rng.choice(cids), rng.randrange(TICKS), _caps(rng)) for _ in range(rng.randint(2, 20))]
                call = (ledger.reserve_many, batch)
            elif roll < 0.97:
                batch = [(rng.choice(cids), rng.randrange(TICKS), {}) for _ in range(rng.randint(2, 20))]
                call = (ledger.settle_many, batch)
            else:
                call = (ledger.adjust, cid, rng.randint(-5_000, 5_000) or 1)
            previous = call
            result = attempt(*call)
            if isinstance(result, Grant) and result.usable and rng.random() < 0.8:
                ack(attempt(ledger.settle, result.campaign, result.tick, _costs(rng, result.granted)))
            elif isinstance(result, Settlement):
                ack(result)
            elif isinstance(result, list):
                for item in result:
                    if isinstance(item, Settlement):
                        ack(item)
                    elif isinstance(item, Grant) and item.usable and rng.random() < 0.5:
                        ack(attempt(ledger.settle, item.campaign, item.tick, _costs(rng, item.granted)))
    client.close()
