"""Flights in wall time: ISO-8601 date-times with an offset, to the fleet's tick numbers and back.

Tick ``t`` runs from ``epoch + t * tick_seconds`` for one tick (``common/fleet/clock.py``). A flight
given as ``[start, end)`` covers the ticks that lie wholly inside it: the first tick that begins at
or after ``start``, up to the last that ends by ``end``, so a campaign never bids before its start
or after its end. Times on tick boundaries map exactly and come back unchanged.

Pure: the epoch and the tick length are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from common.errors import InvalidInput
from common.models import CampaignSpec

EXAMPLE = "2026-12-02T10:00:00+01:00"
# Date-times carry microseconds and epochs are floats: a time within this share of a tick of a
# boundary is on it, so that a date-time written from a tick reads back as the same tick.
SLACK = 1e-6
TIME_FIELDS = {"start": "start_tick", "end": "end_tick"}


def parse_time(field: str, value: object) -> datetime:
    """An ISO-8601 date-time with an offset; ``InvalidInput`` naming ``field`` otherwise."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput.one(field, f"must be an ISO-8601 date-time such as {EXAMPLE}, got {value!r}") from None
    else:
        raise InvalidInput.one(field, f"must be an ISO-8601 date-time string such as {EXAMPLE}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput.one(field, f"has no UTC offset: give one, such as {EXAMPLE} or a trailing Z")
    return parsed


def tick_starting_at(moment: datetime, epoch: float, tick_seconds: float) -> int:
    """The first tick that begins at or after ``moment`` (0 for a moment before the epoch)."""
    return max(0, math.ceil((moment.timestamp() - epoch) / tick_seconds - SLACK))


def ticks_ending_by(moment: datetime, epoch: float, tick_seconds: float) -> int:
    """The end of a flight as a tick number: one past the last tick that ends by ``moment``."""
    return max(0, math.floor((moment.timestamp() - epoch) / tick_seconds + SLACK))


def time_of(tick: int, epoch: float, tick_seconds: float) -> datetime:
    """When tick ``tick`` begins, in UTC, to the microsecond."""
    return datetime.fromtimestamp(epoch + tick * tick_seconds, UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, without fractions of a second when there are none."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def has_times(data: Mapping[str, Any]) -> bool:
    return any(data.get(name) is not None for name in TIME_FIELDS)


def to_ticks(data: Mapping[str, Any], epoch: float, tick_seconds: float) -> dict[str, Any]:
    """``data`` with ``start`` and ``end`` replaced by ``start_tick`` and ``end_tick``.

    Refuses, naming the field: a naive or malformed date-time, a time and a tick for the same edge,
    and a flight shorter than one tick.
    """
    errors: list[tuple[str, str]] = []
    out = {k: v for k, v in data.items() if k not in TIME_FIELDS}
    times: dict[str, datetime] = {}
    for name, tick_name in TIME_FIELDS.items():
        if data.get(name) is None:
            continue
        if data.get(tick_name) is not None:
            errors.append((name, f"give {name} or {tick_name}, not both"))
            continue
        try:
            times[name] = parse_time(name, data[name])
        except InvalidInput as exc:
            errors += exc.errors
    if errors:
        raise InvalidInput(errors)
    if "start" in times:
        out["start_tick"] = tick_starting_at(times["start"], epoch, tick_seconds)
    if "end" in times:
        out["end_tick"] = ticks_ending_by(times["end"], epoch, tick_seconds)
        start_tick = out.get("start_tick", 0)
        if isinstance(start_tick, int) and out["end_tick"] <= start_tick:
            raise InvalidInput.one(
                "end",
                f"must be at least one whole tick ({tick_seconds:g} s, on the fleet's tick boundaries) after start",
            )
    return out


class FleetClock(Protocol):
    """What a conversion needs of the fleet's clock (``common.fleet.clock.Clock``)."""

    @property
    def tick_seconds(self) -> float: ...

    def epoch(self) -> float: ...

    def planned_epoch(self) -> float: ...


@dataclass(frozen=True)
class PlannedClock:
    """A clock whose epoch is fixed: ``planned_epoch()`` of the fleet's, so that input is checked before
    the fleet's clock is started (by the first write that places a flight in wall time)."""

    tick_seconds: float
    at: float

    def epoch(self) -> float:
        return self.at

    def planned_epoch(self) -> float:
        return self.at


def planned(clock: FleetClock) -> PlannedClock:
    return PlannedClock(clock.tick_seconds, clock.planned_epoch())


def place_fields(data: Mapping[str, Any], clock: FleetClock) -> dict[str, Any]:
    """``resolve`` on the planned epoch, then on the fleet's once the date-times were found valid."""
    plan = planned(clock)
    fields = resolve(data, plan)
    if has_times(data) and clock.epoch() != plan.at:
        fields = resolve(data, clock)
    return fields


def place(data: Mapping[str, Any], clock: FleetClock) -> CampaignSpec:
    """``parse_campaign`` on the planned epoch, then the epoch stored if the flight needed it.

    Input refused leaves the clock as it was. If another process started the clock meanwhile on
    another epoch (a tick boundary passed), the flight is placed again on that one.
    """
    plan = planned(clock)
    spec = parse_campaign(data, plan)
    if has_times(data) and clock.epoch() != plan.at:
        spec = parse_campaign(data, clock)
    return spec


def resolve(data: Mapping[str, Any], clock: FleetClock) -> dict[str, Any]:
    """``data`` with its flight in ticks: date-times converted (reading, or first setting, the fleet's
    epoch only then), empty ``start`` and ``end`` dropped."""
    if has_times(data):
        return to_ticks(data, clock.epoch(), clock.tick_seconds)
    return {k: v for k, v in data.items() if k not in TIME_FIELDS}


def parse_campaign(data: Mapping[str, Any], clock: FleetClock) -> CampaignSpec:
    """A campaign from untrusted fields, its flight in ticks or date-times; ``InvalidInput`` names every
    bad field: when the date-times are refused, the other fields are still read for their own errors."""
    try:
        in_ticks = resolve(data, clock)
    except InvalidInput as exc:
        rest = {k: v for k, v in data.items() if k not in TIME_FIELDS}
        others = [e for e in _refusals(rest) if e[0] not in TIME_FIELDS.values()]
        raise InvalidInput(exc.errors + others) from None
    try:
        return CampaignSpec.parse(in_ticks)
    except InvalidInput as exc:
        raise blame_times(exc, data) from None


def _refusals(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    try:
        CampaignSpec.parse(dict(data))
    except InvalidInput as exc:
        return exc.errors
    return []


def blame_times(exc: InvalidInput, given: Mapping[str, Any]) -> InvalidInput:
    """``exc`` with ``start_tick`` and ``end_tick`` named as the ``start`` and ``end`` they came from."""
    renamed = {tick: name for name, tick in TIME_FIELDS.items() if given.get(name) is not None}
    if not renamed:
        return exc
    errors = []
    for field, reason in exc.errors:
        if "start_tick" in renamed:
            reason = reason.replace("start_tick", "start")
        errors.append((renamed.get(field, field), reason))
    return InvalidInput(errors)
