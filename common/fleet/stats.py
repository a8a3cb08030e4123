"""One entry of the ``ce:tick:stats`` stream: what a finished tick's evaluations did.

The tick's claimant writes it when the next tick begins (``common.fleet.tick.summarize``); the
metrics, the API's dashboard and ``campaign-engine up`` read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from common import keys
from common.redis_conn import Fields

_FLOATS = frozenset({"value", "planned", "worst_latency_ms", "tick_task_ms"})
# Fields added after entries were first written: an entry without one reads as the default.
_ADDED_LATER = frozenset({"tick_task_ms", "short_run"})


@dataclass(frozen=True, slots=True)
class TickStats:
    """Counts of one tick; ``spend_micros`` is what its bids cost, ``planned`` what pacing planned.

    ``missed`` is what was fanned out but neither evaluated nor skipped on time;
    ``worst_latency_ms`` the time from the tick's start to the end of its slowest evaluation;
    ``tick_task_ms`` how long the tick task itself took, from its start through the fan-out;
    ``short_run`` how many ticks running up to this one were short (``common.fleet.capacity``).
    """

    tick: int
    fanned: int = 0
    evaluated: int = 0
    bids: int = 0
    spend_micros: int = 0
    late: int = 0
    dropped: int = 0
    duplicates: int = 0
    skipped: int = 0
    value: float = 0.0
    planned: float = 0.0
    missed: int = 0
    worst_latency_ms: float = 0.0
    tick_task_ms: float = 0.0
    short_run: int = 0

    @property
    def spend(self) -> float:
        return self.spend_micros / 1e6

    def to_fields(self) -> Fields:
        """The stream's fields, in this record's order; the latency to a tenth of a millisecond."""
        out: Fields = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        out["value"], out["planned"] = repr(self.value), repr(self.planned)
        out["worst_latency_ms"] = f"{self.worst_latency_ms:.1f}"
        out["tick_task_ms"] = f"{self.tick_task_ms:.1f}"
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> TickStats:
        """Parse a stream entry; a missing or malformed field raises ``ValueError`` naming it.

        A field added later (``tick_task_ms``, ``short_run``) may be missing from older entries: it reads
        as its default.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw and f.name in _ADDED_LATER:
                continue
            if f.name not in raw:
                raise ValueError(f"tick stats entry without {f.name!r}: {dict(raw)}")
            values[f.name] = (float if f.name in _FLOATS else int)(raw[f.name])
        return cls(**values)


def append(client: Any, stats: TickStats, maxlen: int) -> None:
    """Add a tick's entry to the stream, capped near ``maxlen`` entries (``CE_TICK_STATS_RETENTION_TICKS``).

    Approximate trimming drops whole stream nodes (100 entries each), so it keeps up to 100 more.
    """
    client.xadd(keys.TICK_STATS, stats.to_fields(), maxlen=maxlen, approximate=True)


def parse(entries: Iterable[tuple[str, Mapping[str, str]]]) -> list[TickStats]:
    """Entries as ``XRANGE`` or ``XREAD`` return them, in the order given."""
    return [TickStats.from_fields(raw) for _id, raw in entries]


def recent(client: Any, count: int) -> list[TickStats]:
    """The newest ``count`` entries of the stream, newest first."""
    return parse(client.xrevrange(keys.TICK_STATS, count=count))


def last(client: Any) -> TickStats | None:
    """The newest entry of the stream, or None when no tick has been summarised."""
    entries = client.xrevrange(keys.TICK_STATS, count=1)
    return parse(entries)[0] if entries else None
