"""Per-tick cost and conversions of each campaign over the last ticks, for the dashboard's ROI trend.

Kept in the API process and fed incrementally from ``ce:decisions``: each refresh reads only the
entries added since the last one, so any number of open dashboards cost one small read per tick.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable

from common import keys
from common.fleet import decisions
from common.redis_conn import Client

_READ_BATCH = 5000
# At most this many entries are read back when the trend starts (or the stream was reset).
_BOOT_ENTRIES = 50_000


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Trends:
    def __init__(self, ticks: int = 30) -> None:
        self.ticks = ticks
        self._lock = threading.Lock()
        self._last_id: str | None = None
        # tick -> campaign -> [cost, conversions]
        self._by_tick: dict[int, dict[str, list[float]]] = defaultdict(dict)

    def refresh(self, client: Client) -> None:
        with self._lock:
            newest: list[tuple[str, dict[str, str]]] = client.xrevrange(keys.DECISIONS, count=1)  # type: ignore[assignment]
            if not newest:
                self._reset()
                return
            if self._last_id is not None and _id_key(newest[0][0]) < _id_key(self._last_id):
                self._reset()  # the stream was replaced (a new fleet on the same Redis)
            if self._last_id is None:
                boot: list[tuple[str, dict[str, str]]] = client.xrevrange(  # type: ignore[assignment]
                    keys.DECISIONS, count=_BOOT_ENTRIES
                )
                self._add(reversed(boot))
            else:
                while True:
                    batch: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
                        keys.DECISIONS, min=f"({self._last_id}", count=_READ_BATCH
                    )
                    self._add(batch)
                    if len(batch) < _READ_BATCH:
                        break
            if self._by_tick:
                horizon = max(self._by_tick) - self.ticks
                for tick in [t for t in self._by_tick if t <= horizon]:
                    del self._by_tick[tick]

    def _reset(self) -> None:
        self._last_id = None
        self._by_tick.clear()

    def _add(self, entries: Iterable[tuple[str, dict[str, str]]]) -> None:
        for entry_id, entry in decisions.parse(entries):
            self._last_id = entry_id
            sums = self._by_tick[entry.tick].setdefault(entry.campaign, [0.0, 0.0])
            for record in entry.bids:
                sums[0] += record.cost
                sums[1] += record.conversions

    def window(self, last_tick: int | None) -> list[int]:
        if last_tick is None:
            return []
        return list(range(max(0, last_tick - self.ticks + 1), last_tick + 1))

    def roi(self, campaign: str, value_per_conversion: float, ticks: list[int]) -> list[float | None]:
        """Value per unit of spend in each tick; None where the campaign spent nothing."""
        out: list[float | None] = []
        with self._lock:
            for tick in ticks:
                cost, conversions = self._by_tick.get(tick, {}).get(campaign, (0.0, 0.0))
                out.append(conversions * value_per_conversion / cost if cost > 0 else None)
        return out
