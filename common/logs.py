"""Logging set-up: module loggers everywhere, one format chosen by settings (text or JSON)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from common.settings import Settings

NOISY_PER_TASK = ("celery.app.trace", "celery.worker.strategy", "celery.worker.request")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings, stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if settings.log_format == "json":
        # Structured fields passed with ``extra=`` (tick, campaign, platform) become JSON keys.
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # Celery logs every task received and succeeded at INFO: hundreds of lines per tick.
        for name in NOISY_PER_TASK:
            logging.getLogger(name).setLevel(logging.WARNING)
