"""Celery worker shell: ``celery -A worker worker`` evaluates campaigns; the domain lives in ``common``."""

import gc
from typing import Any

from celery.signals import (
    beat_init,
    celeryd_init,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from common.fleet import publisher
from common.logs import configure_logging
from common.settings import get_settings
from worker.app import create_app

app = create_app()


@setup_logging.connect
def _logging(**_: Any) -> None:
    """The engine's own log format for worker and beat processes, instead of Celery's."""
    configure_logging(get_settings())


@celeryd_init.connect
@beat_init.connect
def _require_redis(**_: Any) -> None:
    if get_settings().redis_url is None:
        raise SystemExit("error: CE_REDIS_URL is not set; point it at the fleet's Redis (redis://host:6379/0)")


# Collections of the youngest generation: one per this many container objects allocated and not yet
# freed. At Python's 700 a pool process collected it 250-550 times in a one-minute bench run, each
# time over what the evaluation in hand holds, almost all of which its reference count frees anyway;
# at 20,000 it collected it 2-9 times in the same run. Cyclic garbage waits that much longer.
YOUNG_COLLECTION_THRESHOLD = 20_000


@worker_ready.connect
@worker_process_init.connect
@beat_init.connect
def _freeze_long_lived(**_: Any) -> None:
    """Leave what a process holds once started (modules, the app, its clients) out of later collections.

    A pool process holds some 120,000 objects after start-up, which every full collection traversed
    again (about 65 ms each); frozen, a full collection sees the 10,000-20,000 an evaluation keeps
    and takes about 7 ms. With the young generation's threshold raised (above), collections took
    under 1% of an evaluating process's CPU, where they took 7-11%. Run in the worker's main process
    once it is ready, in each pool process as it starts (the objects inherited from the fork), and
    in beat.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


@worker_process_shutdown.connect
def _publish_what_is_buffered(**_: Any) -> None:
    """A pool process that stops publishes the outcomes it still holds (a short while, then counts them lost)."""
    publisher.close_all(timeout=2.0)


__all__ = ["app"]
