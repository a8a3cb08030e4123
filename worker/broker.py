"""Celery's Redis transport, with one Redis client object per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` client on its connection pool for every command
it sends outside the consuming connection (``Channel.conn_or_acquire``): the pipeline that moves a
delivered message into the ``unacked`` hash, the one that takes it out again at the ack, each
publish. With redis-py 8 building a client fills a dictionary of some two hundred response
callbacks: profiled on a live worker (``py-spy --gil`` on its main process, one campaign a task),
``Redis.__init__`` was a fifth of the main process's CPU, twice per message. The main process
receives, acks and hands to the pool every message of the worker, one after the other, so that
fifth came off every task the worker ran, evaluations and the benchmark's no-op alike.

Here a channel keeps the client it built and hands it out again while the connection pool is the
same one (kombu drops its pools after a fork or a reconnection; a new pool gets a new client). A
``redis.Redis`` on a connection pool holds no connection of its own: every command still takes a
connection from the pool and gives it back, so the commands sent and their order do not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis

# Schemes this transport serves; any other broker URL keeps kombu's own transport for its scheme.
SCHEMES = ("redis", "rediss")
TRANSPORT = "worker.broker:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def transport_for(url: str | None) -> str | None:
    """``broker_transport`` for a broker at ``url``: this module's for Redis, else None (kombu's own)."""
    if url is None or urlsplit(url).scheme not in SCHEMES:
        return None
    return TRANSPORT
