"""Beat's schedule: ticks fire on a wall-clock grid, and a late fire numbers the tick it is late for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from beat.schedule import AlignedInterval, slot_start
from common.fleet.clock import Clock

TICK = 2.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_due_once_per_slot_of_the_grid() -> None:
    clock = AlignedInterval(TICK, nowfun=lambda: at(1000.5))  # slot [1000, 1002)
    due = clock.is_due(at(999.9))
    assert due.is_due and due.next == pytest.approx(1.5), "the last run was in the previous slot"
    again = clock.is_due(at(1000.0))
    assert not again.is_due and again.next == pytest.approx(1.5), "this slot has run: wait for the next"


def test_a_beat_late_by_most_of_a_tick_still_fires_for_its_slot() -> None:
    late = AlignedInterval(TICK, nowfun=lambda: at(1001.9))
    assert late.is_due(at(998.0)).is_due
    assert slot_start(TICK, now=1001.9) == 1000.0, "not the next boundary, 1002"
    assert slot_start(TICK, now=1000.0) == 1000.0
    assert slot_start(0.1, now=0.1 * 3) == pytest.approx(0.3), "float noise at a boundary is that boundary"


@given(lateness=st.lists(st.floats(0.0, 0.999 * TICK), min_size=1, max_size=30))
def test_beats_late_by_any_part_of_a_tick_number_every_tick_once_in_order(lateness: list[float]) -> None:
    """Beat fires for slot k at boundary k plus some lateness; the tick numbers are 1, 2, 3, ..."""
    epoch = 1_700_000_000.0
    fired = [slot_start(TICK, now=epoch + k * TICK + late) for k, late in enumerate(lateness, start=1)]
    assert [round((t - epoch) / TICK) for t in fired] == list(range(1, len(lateness) + 1))


def test_the_fleet_numbers_a_late_beat_s_tick_as_its_slot(r: redis.Redis) -> None:
    """What the tick task does with the boundary beat sends: the fleet's clock names the tick."""
    clock = Clock(r, TICK)
    try:
        epoch = clock.epoch()
        for late in (0.0, 0.4, 1.1, 1.99):
            assert clock.tick_at(slot_start(TICK, now=epoch + 7 * TICK + late)) == 7, late
    finally:
        clock.close()
