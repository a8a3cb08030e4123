"""Celery worker shell: ``celery -A worker worker`` evaluates campaigns; the domain lives in ``common``."""

from typing import Any

from celery.signals import beat_init, celeryd_init, setup_logging, worker_process_shutdown

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


@worker_process_shutdown.connect
def _publish_what_is_buffered(**_: Any) -> None:
    """A pool process that stops publishes the outcomes it still holds (a short while, then counts them lost)."""
    publisher.close_all(timeout=2.0)


__all__ = ["app"]
