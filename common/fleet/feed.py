"""The metrics feed: each platform's CPC, CVR and volume per tick, published after the tick ends.

``FeedStore`` keeps what was published in Redis (idempotently: a (platform, tick) is written once)
and reads the sliding windows the forecasts need. ``SimulatedFeed`` plays a scenario's true series
into it, one tick at a time, as a real platform connector would post them.

Each figure is kept twice: as JSON in the platform's hash, for the short forecasting window and the
dashboard (trimmed to a few hundred ticks), and its volume as two float64 (tick + 1, volume) in a
ring of ``VOLUME_HISTORY_TICKS`` slots, which the volume cycle reads a whole season of with one
GETRANGE and one ``numpy.frombuffer`` instead of a JSON document per tick. The tick stamp tells a
slot written for the tick asked from one left by an earlier lap, or never written (zero).

The ring is allocated whole when it is created, by one SETRANGE at its last slot on a missing key
(Redis then allocates exactly that, 1.8 MB with jemalloc's rounding). Grown slot by slot instead,
Redis doubles the string below 1 MB and adds 1 MB steps past it: its memory grew through the whole
first lap (0.13 MB for 4 platforms at tick 2,000, 0.79 MB at 10,000, about 3 MB per platform at the
end, past 1.6 MB of slots), which made a day-long run's memory grow with its length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common import keys
from common.errors import InvalidInput
from common.market.scenario import Scenario
from common.models import FloatArray, PlatformFigures
from common.redis_conn import Client, store_call

METRICS = ("cpc", "cvr", "volume")
# Slots of the volume ring: the longest season the settings allow (CE_SEASON_TICKS).
VOLUME_HISTORY_TICKS = 100_000
_SLOT = np.dtype([("stamp", "<f8"), ("volume", "<f8")])
RING_BYTES = VOLUME_HISTORY_TICKS * _SLOT.itemsize  # 1.6 MB per platform, allocated when the ring is created


class FeedStore:
    def __init__(self, client: Client) -> None:
        self.r = client

    @store_call("publish feed")
    def publish(self, tick: int, figures: Mapping[str, PlatformFigures]) -> int:
        """Store figures of one tick; returns how many (platform, tick) pairs were new."""
        if tick < 0:
            raise InvalidInput.one("tick", "must be >= 0")
        pipe = self.r.pipeline(transaction=False)
        for pid, fig in figures.items():
            pipe.hsetnx(keys.feed(pid), str(tick), fig.model_dump_json())
            pipe.strlen(keys.feed_volume(pid))
        replies = pipe.execute()
        # The ring takes the volume of the figures the hash kept: only a first publication writes it.
        new = [pid for pid, written in zip(figures, replies[0::2], strict=True) if written]
        for pid, length in zip(figures, replies[1::2], strict=True):
            if pid in new and length < RING_BYTES:
                self._allocate_ring(pid, length)
        for pid in new:
            pipe.setrange(keys.feed_volume(pid), _offset(tick), _pack([tick], [figures[pid].volume]))
        if new:
            # GT: a late figure of an older tick never moves a platform's newest tick back.
            pipe.zadd(keys.FEED_NEWEST, {pid: tick for pid in new}, gt=True)
        pipe.execute()
        return len(new)

    def _allocate_ring(self, platform_id: str, length: int) -> None:
        """Give the ring all its slots at once, so that its memory does not grow with the run.

        On a missing key SETRANGE allocates exactly the length asked; two publishers racing both
        write zeros to the same never-written last slot, and a zero stamp reads as no tick. A ring
        grown slot by slot before rings were allocated whole takes one last growth step instead
        (Redis's 1 MB step: about 3 MB), and stays at that.
        """
        self.r.setrange(keys.feed_volume(platform_id), RING_BYTES - _SLOT.itemsize, bytes(_SLOT.itemsize))
        if length == 0:
            self._fill_volumes(platform_id)  # a feed published before the ring existed: copied once

    @store_call("read the feed's newest ticks")
    def newest(self, platform_ids: Sequence[str]) -> dict[str, int | None]:
        """Each platform's newest tick with figures; None where none was ever published."""
        if not platform_ids:
            return {}
        scores = self.r.zmscore(keys.FEED_NEWEST, list(platform_ids))
        return {pid: None if s is None else int(s) for pid, s in zip(platform_ids, scores, strict=True)}  # type: ignore[arg-type]

    @store_call("read feed figures")
    def figures(self, platform_ids: Sequence[str], tick: int) -> dict[str, PlatformFigures]:
        """The figures published for ``tick``, by platform; platforms without any are left out."""
        if not platform_ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            pipe.hget(keys.feed(pid), str(tick))
        docs = pipe.execute()
        return {
            pid: PlatformFigures.model_validate_json(doc) for pid, doc in zip(platform_ids, docs, strict=True) if doc
        }

    def _fill_volumes(self, platform_id: str) -> None:
        stored: dict[str, str] = self.r.hgetall(keys.feed(platform_id))  # type: ignore[assignment]
        pipe = self.r.pipeline(transaction=False)
        for tick, doc in stored.items():
            pipe.setrange(
                keys.feed_volume(platform_id), _offset(int(tick)), _pack([int(tick)], [json.loads(doc)["volume"]])
            )
        pipe.execute()

    @store_call("read volume history")
    def volumes(self, platform_ids: Sequence[str], first_tick: int, last_tick: int) -> FloatArray:
        """Volumes of ticks ``first_tick .. last_tick`` from the ring: shape (platforms, ticks), NaN where unknown."""
        size = last_tick - first_tick + 1
        out = np.full((len(platform_ids), max(size, 0)), np.nan)
        start = max(first_tick, 0, last_tick - VOLUME_HISTORY_TICKS + 1)
        if start > last_tick or not platform_ids:
            return out
        # The ticks asked occupy one run of slots, or two where the ring wraps around.
        runs, tick = [], start
        while tick <= last_tick:
            slot = tick % VOLUME_HISTORY_TICKS
            length = min(last_tick - tick + 1, VOLUME_HISTORY_TICKS - slot)
            runs.append((slot, length))
            tick += length
        # Through execute_command, which alone takes NEVER_DECODE: the slots are bytes on a decoding client.
        pipe: Any = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            for slot, length in runs:
                begin = slot * _SLOT.itemsize
                pipe.execute_command(
                    "GETRANGE", keys.feed_volume(pid), begin, begin + length * _SLOT.itemsize - 1, NEVER_DECODE=True
                )
        replies = iter(pipe.execute())
        expected = np.arange(start, last_tick + 1, dtype=float) + 1
        for i in range(len(platform_ids)):
            # A ring shorter than the slots asked (never written that far) reads as zeros: no tick.
            raw = b"".join(_padded(next(replies), length) for _, length in runs)
            slots = np.frombuffer(raw, dtype=_SLOT)
            out[i, start - first_tick :] = np.where(slots["stamp"] == expected, slots["volume"], np.nan)
        return out

    @store_call("read feed")
    def window(self, platform_ids: Sequence[str], last_tick: int, size: int) -> FloatArray:
        """Figures of ticks ``last_tick - size + 1 .. last_tick``: shape (platforms, size, 3), NaN where missing."""
        ticks = [str(t) for t in range(last_tick - size + 1, last_tick + 1)]
        out = np.full((len(platform_ids), size, len(METRICS)), np.nan)
        if size <= 0 or not platform_ids:
            return out
        pipe = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            pipe.hmget(keys.feed(pid), ticks)
        for i, values in enumerate(pipe.execute()):
            for j, doc in enumerate(values):
                if doc:
                    fig = json.loads(doc)
                    out[i, j] = (fig["cpc"], fig["cvr"], fig["volume"])
        return out

    @store_call("trim feed")
    def trim(self, platform_ids: Sequence[str], before_tick: int, span: int) -> None:
        """Forget figures of ``span`` ticks before ``before_tick`` (older ones were trimmed already)."""
        old = [str(t) for t in range(max(0, before_tick - span), max(0, before_tick))]
        if not old:
            return
        pipe = self.r.pipeline(transaction=False)
        for pid in platform_ids:
            pipe.hdel(keys.feed(pid), *old)
        pipe.execute()


def _offset(tick: int) -> int:
    return (tick % VOLUME_HISTORY_TICKS) * _SLOT.itemsize


def _pack(ticks: Sequence[int], volumes: Sequence[float]) -> bytes:
    slots = np.empty(len(ticks), dtype=_SLOT)
    slots["stamp"] = np.asarray(ticks, dtype=float) + 1
    slots["volume"] = volumes
    return slots.tobytes()


def _padded(raw: bytes, slots: int) -> bytes:
    return raw + bytes(slots * _SLOT.itemsize - len(raw))


class SimulatedFeed:
    """Plays a scenario's true series as the platforms' published figures."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def figures(self, tick: int) -> dict[str, PlatformFigures]:
        """True figures of ``tick``; past the scenario's end the series repeat from its start."""
        index = tick % self.scenario.ticks
        return {pid: series.figures(index) for pid, series in self.scenario.platforms.items()}
