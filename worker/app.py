"""The Celery application shared by workers and beat."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu.entity import Queue

from common.errors import SettingsError
from common.settings import Settings, get_settings
from worker.broker import transport_for

TICK_QUEUE = "ticks"
EVALUATION_QUEUE = "evaluations"
MAINTENANCE_QUEUE = "maintenance"
# Every queue of the fleet: a worker started with ``-Q`` lists them all, the API reports their depth.
QUEUES = (TICK_QUEUE, EVALUATION_QUEUE, MAINTENANCE_QUEUE)
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def configure(app: Celery, settings: Settings) -> None:
    tick = settings.tick_seconds
    app.conf.update(
        # Unset only in a process that never talks to the fleet (a command importing the tasks);
        # worker and beat refuse to start without it (see worker/__init__.py).
        broker_url=settings.broker_url or settings.redis_url,
        # kombu's Redis transport with one client object per channel (worker/broker.py).
        broker_transport=transport_for(settings.broker_url or settings.redis_url),
        broker_use_ssl=broker_tls(settings.broker_url or settings.redis_url),
        # JSON only: no pickle from a shared broker, and messages any language can read.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        # Fan-out tasks report through Redis counters and the decision stream, not results.
        task_ignore_result=True,
        result_backend=None,
        # Ack after the work is done and re-queue when a worker dies mid-task: a redelivered
        # evaluation is harmless because the ledger is idempotent per (campaign, tick).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Each process reserves a few tasks at most: together they take far less than one tick,
        # so a slow or dying worker never sits on a tick's worth of evaluations.
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        # Unacked messages come back after this long. Evaluations expire at their tick's deadline,
        # so a message restored after a crash is dropped as late rather than bid on stale data,
        # and the sweeper closes its reservation (released if never submitted, else charged in full).
        broker_transport_options={"visibility_timeout": max(60.0, 30 * tick)},
        # Ticks and evaluations on separate queues, so a backlog of one never delays the other.
        task_queues=tuple(Queue(name) for name in QUEUES),
        task_default_queue=EVALUATION_QUEUE,
        task_routes={
            "ce.tick": {"queue": TICK_QUEUE},
            "ce.evaluate": {"queue": EVALUATION_QUEUE},
            "ce.sweep": {"queue": MAINTENANCE_QUEUE},
            # The benchmark's no-op runs where evaluations run, to measure what they could reach.
            "ce.noop": {"queue": EVALUATION_QUEUE},
        },
        # An evaluation is a few milliseconds; anything near a tick is stuck.
        task_soft_time_limit=max(5.0, 5 * tick),
        task_time_limit=max(10.0, 10 * tick),
        # Task events cost a quarter of the fleet's throughput (three publishes per evaluation).
        # They stay off unless someone watches: Flower switches them on while it runs, and
        # `celery worker -E` forces them.
        worker_send_task_events=False,
        worker_disable_rate_limits=True,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        beat_schedule_filename=str(settings.run_dir / "celerybeat-schedule"),
        timezone="UTC",
        enable_utc=True,
    )


def broker_tls(url: str | None) -> dict[str, Any] | None:
    """``broker_use_ssl`` for a ``rediss://`` broker whose URL does not say how to verify the server.

    redis-py verifies a rediss:// server's certificate unless told otherwise; kombu, given no
    ``ssl_cert_reqs``, does not verify at all. The fleet's clients must agree, and verify: ``required``
    unless the URL's ``ssl_cert_reqs`` says else (its other ``ssl_*`` parameters kombu reads itself).
    """
    if url is None or urlsplit(url).scheme != "rediss":
        return None
    query = parse_qs(urlsplit(url).query)
    if "ssl_cert_reqs" in query:
        return None
    files = {name: values[-1] for name, values in query.items() if name in _TLS_FILES}
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, **files}


def process_settings() -> Settings:
    """The settings of a worker or beat process: a bad one ends it with one line naming the variable."""
    try:
        return get_settings()
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or process_settings()
    app = Celery("campaign_engine", include=["worker.tasks"])
    configure(app, settings)
    return app
