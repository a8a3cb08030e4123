"""Every campaign's outcome of every tick, published to NATS JetStream (``CE_DECISIONS_NATS_URL``).

Evaluations run in synchronous worker processes and must never wait on NATS or fail with it: an
evaluation only puts its outcomes (``common.fleet.outcomes``) in this process's bounded buffer and
goes on. A thread of the process, with an asyncio event loop of its own for the nats-py client,
drains the buffer: it publishes each outcome to the ``CE_DECISIONS`` stream (created when missing)
and waits for JetStream's acknowledgement, retrying a few times with a backoff. What does not fit in
the buffer (NATS down for long, or too slow) and what fails past the retries is dropped and counted
in the fleet's metrics (``decisions_out_*`` in ``ce:metrics``, see ``count``), never raised.

Each message carries the ``Nats-Msg-Id`` ``<campaign>:<tick>``: a publish retried after its
acknowledgement was lost (the server stored it, the answer never came) is stored once, as JetStream
drops repeats of an id within the stream's duplicate window.

The publisher is made on first use in the process that publishes: a Celery prefork child builds
its own after the fork (``for_process``), as a thread and a socket do not survive a fork.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import StreamConfig

from common.fleet import metrics, outcomes
from common.fleet.outcomes import OutcomeMessage
from common.redis_conn import connect
from common.settings import Settings

if TYPE_CHECKING:
    from common.fleet.evaluation import GroupReport
    from common.fleet.fleet import Fleet

log = logging.getLogger(__name__)

STREAM = "CE_DECISIONS"
SUBJECTS = f"{outcomes.SUBJECT_PREFIX}.>"
# A retried publish is recognised within this window. Retries of one outcome span seconds; the
# window covers the evaluation mark's life (600 s) with room, and costs the server one id per message.
DUPLICATE_WINDOW = 900.0
ATTEMPTS = 5
ACK_TIMEOUT = 2.0
# Outcomes in flight at once: enough to keep a connection busy, few enough to share a tick's CPU.
BATCH = 256
# How often the drained counts reach Redis.
REPORT_SECONDS = 1.0
PUBLISH_ERRORS = (nats.errors.Error, asyncio.TimeoutError, OSError)


@dataclass
class Counts:
    """Outcomes published (acknowledged), dropped on a full buffer, or failed past the retries."""

    published: int = 0
    overflow: int = 0
    failed: int = 0

    def add(self, other: Counts) -> None:
        self.published += other.published
        self.overflow += other.overflow
        self.failed += other.failed

    @property
    def lost(self) -> int:
        return self.overflow + self.failed

    def __bool__(self) -> bool:
        return bool(self.published or self.overflow or self.failed)


class DecisionPublisher:
    """A bounded buffer of outcomes and the thread that publishes them to JetStream.

    ``offer`` never blocks; ``report`` is called (on a worker thread) with the counts since its last
    call, about once a second while there are any, and a failing ``report`` keeps them for the next.
    """

    def __init__(
        self,
        servers: list[str],
        *,
        buffer: int,
        max_age: float,
        max_bytes: int,
        report: Callable[[Counts], None] | None = None,
        attempts: int = ATTEMPTS,
        ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.servers = servers
        self.capacity = buffer
        self.stream = StreamConfig(
            name=STREAM, subjects=[SUBJECTS], max_age=max_age, max_bytes=max_bytes,
            duplicate_window=min(DUPLICATE_WINDOW, max_age),
        )  # fmt: skip
        self.attempts = attempts
        self.ack_timeout = ack_timeout
        self._report = report
        self._buffer: deque[OutcomeMessage] = deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._unreported = Counts()
        self.totals = Counts()  # since this publisher started
        self._stopping = False
        self._close_deadline = float("inf")
        self._unreachable = False
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="ce-decisions-nats", daemon=True)
        self._thread.start()

    def offer(self, messages: Iterable[OutcomeMessage]) -> int:
        """Queue ``messages`` for publishing; returns how many fitted, the rest are counted as lost."""
        batch = list(messages)
        if not batch:
            return 0
        with self._lock:
            room = 0 if self._stopping else max(0, self.capacity - len(self._buffer))
            self._buffer.extend(batch[:room])
            dropped = len(batch) - min(room, len(batch))
            self._count(Counts(overflow=dropped))
        if dropped:
            log.warning("decision buffer full: %d outcomes not published", dropped)
        self._poke()
        return len(batch) - dropped

    def pending(self) -> int:
        """Outcomes buffered or in flight."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def flush(self, timeout: float) -> bool:
        """Wait until every buffered outcome is published or given up, and the counts are reported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._buffer and not self._in_flight
                if idle and not self._unreported:
                    return True
            if idle:
                self._send_report()
            else:
                self._poke()
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is buffered for up to ``timeout`` seconds, count the rest as failed, and stop."""
        with self._lock:
            self._close_deadline = time.monotonic() + timeout
            self._stopping = True
        self._poke()
        self._thread.join(timeout + ACK_TIMEOUT + 1.0)

    def _count(self, counts: Counts) -> None:
        # Called with the lock held.
        self._unreported.add(counts)
        self.totals.add(counts)

    def _poke(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between: the thread has stopped
            self._loop.call_soon_threadsafe(self._wake.set)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception:
            log.exception("decision publisher stopped")
        finally:
            with self._lock:
                self._count(Counts(failed=len(self._buffer) + self._in_flight))
                self._buffer.clear()
                self._in_flight = 0
            self._send_report()
            with contextlib.suppress(RuntimeError):
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _main(self) -> None:
        reporter = asyncio.create_task(self._report_forever())
        nc = None
        try:
            while True:
                with self._lock:
                    stopping, empty = self._stopping, not self._buffer
                if stopping and (empty or self._past_close_deadline()):
                    return
                if empty:
                    await self._sleep(1.0)
                    continue
                if nc is None or nc.is_closed:
                    nc = await self._connect()
                    if nc is None:
                        # Not woken by new outcomes: one attempt a second, whatever the evaluations do.
                        await asyncio.sleep(1.0)
                        continue
                if not nc.is_connected:
                    # Reconnecting: the outcomes wait here, where the buffer's bound counts what is lost.
                    await asyncio.sleep(0.1)
                    continue
                with self._lock:
                    batch = [self._buffer.popleft() for _ in range(min(BATCH, len(self._buffer)))]
                    self._in_flight = len(batch)
                js = nc.jetstream()
                results = await asyncio.gather(*(self._publish(nc, js, m) for m in batch))
                published = sum(results)
                with self._lock:
                    self._in_flight = 0
                    self._count(Counts(published=published, failed=len(batch) - published))
                if published < len(batch):
                    log.warning("%d outcomes not published to NATS after %d attempts", len(batch) - published,
                                self.attempts)  # fmt: skip
        finally:
            reporter.cancel()
            if nc is not None:
                await _close(nc)

    async def _connect(self) -> Any:
        """A connection with the stream in place, or None (logged) when NATS cannot be reached yet."""
        nc = None
        try:
            nc = await nats.connect(
                self.servers, name=f"campaign-engine-{os.getpid()}", connect_timeout=2,
                allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                # No second buffer in the client while reconnecting: what waits, waits in ours, counted.
                pending_size=0,
                error_cb=_quiet, disconnected_cb=_disconnected, reconnected_cb=_reconnected,
            )  # fmt: skip
            await self._ensure_stream(nc.jetstream())
            self._unreachable = False
            return nc
        except PUBLISH_ERRORS as exc:
            # Once per outage at WARNING: the attempts go on every second.
            level = logging.DEBUG if self._unreachable else logging.WARNING
            log.log(level, "NATS unreachable, outcomes wait in the buffer: %s", type(exc).__name__)
            self._unreachable = True
            if nc is not None:
                await _close(nc)
            return None

    async def _ensure_stream(self, js: Any) -> None:
        """Create the stream when it is missing; an existing one is kept as its operator set it."""
        try:
            await js.stream_info(STREAM)
            return
        except nats.js.errors.NotFoundError:
            pass
        try:
            await js.add_stream(self.stream)
            log.info("created the JetStream stream %s (%s)", STREAM, SUBJECTS)
        except nats.js.errors.BadRequestError:
            await js.stream_info(STREAM)  # another process created it meanwhile

    async def _publish(self, nc: Any, js: Any, message: OutcomeMessage) -> bool:
        """Publish and wait for the acknowledgement, up to ``attempts`` times on a live connection.

        While the connection is down the message waits for it rather than spending its attempts, so an
        outage loses only what overflows the buffer. A retry after a lost acknowledgement may reach the
        server twice: the ``Nats-Msg-Id`` makes JetStream store it once.
        """
        body = message.to_json()
        headers = {"Nats-Msg-Id": message.msg_id}
        attempt = 0
        while attempt < self.attempts:
            if not nc.is_connected:
                if nc.is_closed or self._past_close_deadline():
                    return False
                await asyncio.sleep(0.1)
                continue
            try:
                await js.publish(message.subject, body, timeout=self.ack_timeout, headers=headers)
                return True
            except nats.js.errors.NoStreamResponseError:
                # The stream was deleted (or the server lost it): create it again before the retry.
                with contextlib.suppress(*PUBLISH_ERRORS):
                    await self._ensure_stream(js)
            except PUBLISH_ERRORS as exc:
                log.debug("publish of %s failed: %s", message.msg_id, type(exc).__name__)
            attempt += 1
            if attempt < self.attempts:
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        return False

    def _past_close_deadline(self) -> bool:
        with self._lock:
            return self._stopping and time.monotonic() > self._close_deadline

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            await asyncio.to_thread(self._send_report)

    def _send_report(self) -> None:
        with self._lock:
            counts, self._unreported = self._unreported, Counts()
        if not counts or self._report is None:
            return
        try:
            self._report(counts)
        except Exception as exc:  # Redis down: keep them for the next report
            log.warning("decision publish counts not recorded: %s", exc)
            with self._lock:
                self._unreported.add(counts)


async def _close(nc: Any) -> None:
    if not nc.is_closed:
        with contextlib.suppress(*PUBLISH_ERRORS):
            await asyncio.wait_for(nc.close(), 2.0)


async def _quiet(exc: Exception) -> None:
    log.debug("NATS: %s", exc)


async def _disconnected() -> None:
    log.warning("NATS disconnected: outcomes wait in the buffer")


async def _reconnected() -> None:
    log.info("NATS reconnected")


# One publisher per process and configuration; a forked child starts with none (register_at_fork).
_publishers: dict[tuple[str, str | None], DecisionPublisher] = {}
_pid = os.getpid()
_lock = threading.Lock()


def _forget_after_fork() -> None:
    global _pid, _lock
    _publishers.clear()  # their threads stayed in the parent
    _pid = os.getpid()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def for_process(settings: Settings) -> DecisionPublisher:
    """This process's publisher for ``settings`` (which must name a NATS server), started on first use."""
    key = (settings.decisions_nats_url or "", settings.redis_url)
    with _lock:
        if _pid != os.getpid():  # forked without the hook (cannot happen on CPython, but cheap)
            _forget_after_fork()
        publisher = _publishers.get(key)
        if publisher is None:
            publisher = DecisionPublisher(
                settings.nats_servers,
                buffer=settings.decisions_nats_buffer,
                max_age=settings.decisions_nats_max_age,
                max_bytes=settings.decisions_nats_max_bytes,
                report=_reporter(settings.redis_url),
                attempts=ATTEMPTS,
                ack_timeout=ACK_TIMEOUT,
            )
            _publishers[key] = publisher
        return publisher


def _reporter(state_url: str | None) -> Callable[[Counts], None] | None:
    """Counts into the fleet's metrics, on a client of the publisher's own (used from its thread)."""
    if state_url is None:
        return None
    client = connect(state_url)
    return lambda c: metrics.count_published(client, c.published, c.overflow, c.failed)


def close_all(timeout: float = 2.0) -> None:
    """Stop this process's publishers, publishing what they hold for up to ``timeout`` seconds."""
    with _lock:
        publishers = list(_publishers.values()) if _pid == os.getpid() else []
        _publishers.clear()
    for publisher in publishers:
        publisher.close(timeout)


atexit.register(close_all)


def publish(fleet: Fleet, report: GroupReport, ts: float) -> None:
    """Hand the outcomes of an evaluated group to the publisher, when one is configured; never raises."""
    if fleet.settings.decisions_nats_url is None or not report.decisions:
        return
    try:
        for_process(fleet.settings).offer(outcomes.of_report(report, ts))
    except Exception:  # the evaluation is done and recorded: publishing is never its failure
        log.exception("outcomes of tick %d not handed to the publisher", report.tick)
