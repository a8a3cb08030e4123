"""Celery worker shell: ``celery -A worker worker`` evaluates campaigns; the domain lives in ``common``."""

from typing import Any

from celery.signals import setup_logging

from common.logs import configure_logging
from common.settings import get_settings
from worker.app import create_app

app = create_app()


@setup_logging.connect
def _logging(**_: Any) -> None:
    """The engine's own log format for worker and beat processes, instead of Celery's."""
    configure_logging(get_settings())


__all__ = ["app"]
