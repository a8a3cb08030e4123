"""What a worker's processes do as they start."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery.signals import beat_init, worker_process_init, worker_ready

from common.settings import get_settings
from worker import YOUNG_COLLECTION_THRESHOLD


@pytest.fixture
def settings_of(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[None]:
    """The process settings a started worker has (beat's start checks that the fleet's Redis is set)."""
    monkeypatch.setenv("CE_REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("settings_of")
@pytest.mark.parametrize("signal", [worker_process_init, worker_ready, beat_init], ids=lambda s: s.name)
def test_a_process_that_has_started_leaves_what_it_holds_out_of_collections(signal: object) -> None:
    threshold = gc.get_threshold()
    gc.unfreeze()
    held = [[i] for i in range(1000)]  # tracked containers, alive when the process is ready
    try:
        signal.send(sender=None)  # type: ignore[attr-defined]
        assert gc.get_freeze_count() >= len(held), "nothing frozen"
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
