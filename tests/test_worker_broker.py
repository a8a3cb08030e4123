"""The broker transport's shared client (``worker/broker.py``): one client object per channel and pool."""

from __future__ import annotations

from pathlib import Path

import redis

from common.settings import Settings
from worker.app import EVALUATION_QUEUE, create_app
from worker.broker import TRANSPORT, Channel, transport_for


def test_the_fleet_app_uses_the_shared_client_transport_for_a_redis_broker(redis_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    try:
        with app.connection_for_write() as conn:
            assert isinstance(conn.default_channel, Channel)
    finally:
        app.close()


def test_transport_only_for_redis_urls() -> None:
    assert transport_for("redis://localhost:6379/0") == TRANSPORT
    assert transport_for("rediss://localhost:6380/0?ssl_cert_reqs=required") == TRANSPORT
    assert transport_for("amqp://guest@localhost//") is None
    assert transport_for(None) is None


def test_a_channel_hands_out_one_client_until_its_pool_changes(redis_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
                assert first.ping()
            given = redis.Redis.from_url(redis_url)
            with channel.conn_or_acquire(given) as passed:
                assert passed is given
            given.close()
            # kombu drops its pools after a fork or a reconnection: the next command gets a new client.
            channel._disconnect_pools()
            with channel.conn_or_acquire() as third:
                assert third is not first
                assert third.connection_pool is channel.pool
                assert third.ping()
    finally:
        app.close()


def test_a_message_goes_through_the_unacked_hash_and_out_at_the_ack(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """The commands kombu sends through the shared client still move a message as before."""
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    try:
        with app.connection_for_write() as conn:
            app.send_task("ce.noop", connection=conn)
            assert r.llen(EVALUATION_QUEUE) == 1
            queue = conn.SimpleQueue(EVALUATION_QUEUE, no_ack=False)
            message = queue.get(timeout=5)
            assert r.hlen("unacked") == 1 and r.llen(EVALUATION_QUEUE) == 0
            message.ack()
            assert r.hlen("unacked") == 0
            queue.close()
    finally:
        app.close()
