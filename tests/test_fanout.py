"""The tick's batched fan-out sends the very messages ``apply_async`` sends, one per group."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

import worker.tasks  # noqa: F401  (registers the fleet's tasks with the app below)
from common.settings import Settings
from worker.app import EVALUATION_QUEUE, create_app
from worker.fanout import publish_evaluations

# What differs between two messages of the same task by construction: their ids, and the
# milliseconds left before ``expires`` when each was built.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "expiration"}


def _queued(r: redis.Redis) -> list[dict[str, Any]]:
    """The evaluations queue's messages, oldest first (kombu pushes on the left, workers pop on the right)."""
    return [json.loads(raw) for raw in reversed(r.lrange(EVALUATION_QUEUE, 0, -1))]


def _without_ids(envelope: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in envelope["headers"].items() if k not in PER_MESSAGE}
    properties = {k: v for k, v in envelope["properties"].items() if k not in PER_MESSAGE}
    return {**envelope, "headers": headers, "properties": properties}


def test_a_batched_message_is_the_message_apply_async_sends(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    task = app.tasks["ce.evaluate"]
    expires = datetime.now(UTC) + timedelta(seconds=30)
    try:
        task.apply_async((["c1", "c2"], 7, 1234.5), expires=expires)
        single = _queued(r)
        r.delete(EVALUATION_QUEUE)
        publish_evaluations(task, [["c1", "c2"], ["c3"], ["c4"]], 7, 1234.5, expires)
        batched = _queued(r)
    finally:
        app.close()
    assert len(single) == 1 and len(batched) == 3, "one message per group, on the evaluations queue"
    assert _without_ids(batched[0]) == _without_ids(single[0]), "the same headers, properties and body"
    ids = [m["headers"]["id"] for m in batched]
    assert len(set(ids)) == 3 and all(m["properties"]["correlation_id"] == m["headers"]["id"] for m in batched)
    assert len({m["properties"]["delivery_tag"] for m in batched}) == 3
    for message, group in zip(batched, (["c1", "c2"], ["c3"], ["c4"]), strict=True):
        assert message["headers"]["expires"] == expires.isoformat(), "expires at the tick's deadline"
        assert 0 < int(message["properties"]["expiration"]) <= 30_000
        assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": EVALUATION_QUEUE}
        args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert args == [group, 7, 1234.5] and kwargs == {}


def test_an_empty_fan_out_sends_nothing(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    try:
        publish_evaluations(app.tasks["ce.evaluate"], [], 3, None, None)
    finally:
        app.close()
    assert r.llen(EVALUATION_QUEUE) == 0


def test_a_long_group_is_shown_cut_as_celery_cuts_it(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(redis_url=redis_url, run_dir=tmp_path))
    group = [f"campaign-{i:05d}" for i in range(300)]
    try:
        publish_evaluations(app.tasks["ce.evaluate"], [group], 9, None, None)
        (message,) = _queued(r)
    finally:
        app.close()
    shown = message["headers"]["argsrepr"]
    assert len(shown) == app.amqp.argsrepr_maxsize and shown.endswith("...")
    assert shown.startswith("(['campaign-00000', 'campaign-00001', ")
    assert message["headers"]["kwargsrepr"] == "{}"
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [group, 9, None], "the message itself carries every campaign"
