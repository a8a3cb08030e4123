"""Celery beat shell: ``celery -A beat beat`` fires the tick and the reservation sweeper."""

from celery.beat import BeatLazyFunc

from beat.schedule import AlignedInterval, slot_start
from worker import app
from worker.app import process_settings

_settings = process_settings()
app.conf.beat_schedule = {
    "tick": {
        "task": "ce.tick",
        "schedule": AlignedInterval(_settings.tick_seconds),
        "kwargs": {"scheduled_at": BeatLazyFunc(slot_start, _settings.tick_seconds)},
    },
    "sweep-reservations": {"task": "ce.sweep", "schedule": AlignedInterval(5 * _settings.tick_seconds)},
}

__all__ = ["app"]
