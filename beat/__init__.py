"""Celery beat shell: ``celery -A beat beat`` fires the tick and the reservation sweeper."""

from celery.beat import BeatLazyFunc

from beat.schedule import AlignedInterval, fleet_now, fleet_slot_start
from worker import app
from worker.app import process_settings

_settings = process_settings()
app.conf.beat_schedule = {
    "tick": {
        "task": "ce.tick",
        "schedule": AlignedInterval(_settings.tick_seconds, nowfun=fleet_now),
        "kwargs": {"scheduled_at": BeatLazyFunc(fleet_slot_start, _settings.tick_seconds)},
    },
    "sweep-reservations": {
        "task": "ce.sweep",
        "schedule": AlignedInterval(5 * _settings.tick_seconds, nowfun=fleet_now),
    },
}

__all__ = ["app"]
