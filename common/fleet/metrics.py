"""Fleet-wide metrics, counted in Redis so that every worker process adds to the same figures.

A Celery worker runs evaluations in forked pool processes that come and go; counters kept in their
memory would be lost with them, and scraping each one would count some twice. So evaluations add
their counts to the ``ce:metrics`` hash in the same pipeline as their tick counters, the tick's
claimant adds one observation per tick to a histogram kept as bucket counters, and the HTTP API
reads it all back in one round trip (``snapshot``) to expose it to Prometheus.

Labels stay bounded: outcomes, platforms and metric names, never campaign ids.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from common import keys
from common.fleet import capacity, scripts
from common.fleet.stats import TickStats
from common.forecast.cache import TickForecasts
from common.redis_conn import Client, store_call

# Seconds from a tick's start to the end of its slowest evaluation.
TICK_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
OUTCOMES = ("bid", "no_bid", "late", "dropped", "duplicate", "skipped")
RESERVATIONS = ("granted", "refused")
# What became of an outcome handed to the NATS publisher (common/fleet/publisher.py).
PUBLISH_RESULTS = ("published", "overflow", "failed")
FORECAST_METRICS = ("cpc", "cvr", "volume")
# Evaluations that expire in the queue are counted as dropped whenever a worker meets them, which
# can be after their tick was summarised: each tick looks this far back for late-counted drops.
DROPPED_LOOKBACK_TICKS = 30
_GUARD_TTL = 86_400


class _Placed(Protocol):
    @property
    def bid(self) -> Any: ...
    @property
    def outcome(self) -> Any: ...
    @property
    def value(self) -> float: ...


class EvaluationCounts(Protocol):
    """What an evaluation of a group of campaigns reports (``common.fleet.evaluation.GroupReport``)."""

    @property
    def evaluated(self) -> int: ...
    @property
    def late(self) -> int: ...
    @property
    def duplicates(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def reserved(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def spend_micros(self) -> int: ...
    @property
    def placed(self) -> Sequence[_Placed]: ...


def count_evaluation(pipe: Any, report: EvaluationCounts) -> None:
    """Add one group's evaluations to the fleet counters, on the caller's pipeline (not executed)."""
    bidders = len({p.bid.campaign for p in report.placed})
    increments = {
        "evaluations_bid": bidders,
        "evaluations_no_bid": report.evaluated - bidders,
        "evaluations_late": report.late,
        "evaluations_duplicate": report.duplicates,
        "evaluations_skipped": report.skipped,
        "reservations_granted": report.reserved,
        "reservations_refused": report.refused,
        "bids": len(report.placed),
        "spend_micros": report.spend_micros,
    }
    for name, amount in increments.items():
        if amount:
            pipe.hincrby(keys.METRICS, name, amount)
    if report.placed:
        pipe.hincrbyfloat(keys.METRICS, "value", sum(p.value for p in report.placed))


class Increments:
    """A group's counter increments, gathered by hash and sent as one script call per hash.

    It takes the pipeline's ``hincrby`` and ``hincrbyfloat`` (what ``count_evaluation`` and the tick's
    counters call), keeps each increment in order, and ``queue`` puts one call of ``lua/increments.lua``
    per hash on the pipeline: at one campaign a task, an evaluation's dozen or so counter commands
    became two script calls. Each amount goes as redis-py encodes it for the command itself, and the
    script applies the same commands in the same order inside Redis, so the hashes hold the same
    figures to the last digit. A call is one key's, so a Redis Cluster routes it like the commands.
    """

    def __init__(self) -> None:
        self.by_key: dict[str, list[Any]] = {}

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self.by_key.setdefault(key, []).extend((field, "i", amount))

    def hincrbyfloat(self, key: str, field: str, amount: float = 1.0) -> None:
        self.by_key.setdefault(key, []).extend((field, "f", amount))

    def calls(self) -> list[tuple[list[str], list[Any]]]:
        """One (keys, args) of ``lua/increments.lua`` per hash, in the order the hashes were first met."""
        return [([key], args) for key, args in self.by_key.items()]

    def queue(self, pipe: Any) -> int:
        """Queue the calls on ``pipe``; how many (their replies follow in order: NOSCRIPT or a count)."""
        increments = scripts.script("increments")
        calls = self.calls()
        for call in calls:
            increments.queue(pipe, *call)
        return len(calls)


def count_late_bids(pipe: Any, bids: int, spend_micros: int, value: float) -> None:
    """Bids whose outcomes came after their evaluation (common/fleet/late.py), once settled: the fleet's
    bid, spend and value counters take them then (the tick's own summary was written before)."""
    if bids:
        pipe.hincrby(keys.METRICS, "bids", bids)
    if spend_micros:
        pipe.hincrby(keys.METRICS, "spend_micros", spend_micros)
    if value:
        pipe.hincrbyfloat(keys.METRICS, "value", value)


def count_stale_tick(client: Client, tick: int) -> None:
    """A tick skipped because its deadline passed before its fan-out (common/fleet/tick.py)."""
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.METRICS, "ticks_stale", 1)
    pipe.hset(keys.METRICS, "last_stale_tick", tick)
    pipe.execute()


PLATFORM_FAILURES = ("not_placed", "unknown", "skipped")


def count_platform_failure(pipe: Any, platform: str, kind: str, amount: int = 1) -> None:
    """A platform's submit of one group that failed (``kind``: not_placed, unknown), or bids its open
    breaker kept from it (skipped, counted per bid)."""
    pipe.hincrby(keys.METRICS, f"platform:{platform}:{kind}", amount)


@store_call("count published outcomes")
def count_published(client: Client, published: int, overflow: int, failed: int) -> None:
    """Add a publisher's counts (``common.fleet.publisher``): outcomes acknowledged by NATS JetStream,
    dropped on a full buffer, or failed past the retries; a loss also stamps ``decisions_out_lost_at``."""
    pipe = client.pipeline(transaction=False)
    for name, amount in zip(PUBLISH_RESULTS, (published, overflow, failed), strict=True):
        if amount:
            pipe.hincrby(keys.METRICS, f"decisions_out_{name}", amount)
    if overflow or failed:
        pipe.hset(keys.METRICS, "decisions_out_lost_at", repr(time.time()))
    pipe.execute()


class _Settled(Protocol):
    @property
    def replay(self) -> bool: ...
    @property
    def extra(self) -> int: ...
    @property
    def overdrawn(self) -> int: ...
    @property
    def unreserved(self) -> bool: ...


def count_settlements(client: Client, settled: Sequence[_Settled]) -> None:
    """Count the charges the ledger never granted: what alerts watch (``common.ledger.Settlement``).

    ``ledger_charges_beyond_grant`` settles that cost more than their grants (a platform overshooting
    a cap, or a cost without a reservation: also ``ledger_unreserved_settles``), with their excess in
    ``ledger_beyond_grant_micros`` and the part of it no budget covered in ``ledger_overdraft_micros``.
    Writes nothing in the usual case, where every cost fits its grant.
    """
    beyond = [s for s in settled if s.extra and not s.replay]
    if not beyond:
        return
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.METRICS, "ledger_charges_beyond_grant", len(beyond))
    pipe.hincrby(keys.METRICS, "ledger_beyond_grant_micros", sum(s.extra for s in beyond))
    unreserved = sum(1 for s in beyond if s.unreserved)
    if unreserved:
        pipe.hincrby(keys.METRICS, "ledger_unreserved_settles", unreserved)
    overdrawn = sum(s.overdrawn for s in beyond)
    if overdrawn:
        pipe.hincrby(keys.METRICS, "ledger_overdraft_micros", overdrawn)
    pipe.execute()


def bucket_field(seconds: float) -> str:
    """The histogram field an observation falls in: the smallest upper bound at or above it."""
    for bound in TICK_SECONDS_BUCKETS:
        if seconds <= bound:
            return f"le:{bound!r}"
    return "le:+Inf"


@store_call("record the tick's metrics")
def record_tick(client: Client, entry: TickStats) -> bool:
    """Enter a finished tick's summary (``common.fleet.tick.summarize``) into the metrics, once per tick.

    Observes the tick's duration, counts it in ``over_capacity_ticks`` when the fleet was over capacity
    (``common.fleet.capacity``), moves drops counted since into ``evaluations_dropped`` and measures
    the forecast error of every platform. Returns False when the tick was already entered.
    """
    tick = entry.tick
    if not client.set(keys.metrics_recorded(tick), "1", nx=True, ex=_GUARD_TTL):
        return False
    pipe = client.pipeline(transaction=False)
    if entry.fanned > 0:
        seconds = entry.worst_latency_ms / 1000
        pipe.hincrby(keys.METRICS_TICK_SECONDS, bucket_field(seconds), 1)
        pipe.hincrby(keys.METRICS_TICK_SECONDS, "count", 1)
        pipe.hincrbyfloat(keys.METRICS_TICK_SECONDS, "sum", seconds)
    if capacity.over_capacity(entry):
        pipe.hincrby(keys.METRICS, "over_capacity_ticks", 1)
    _reconcile_dropped(client, pipe, tick)
    _forecast_errors(client, pipe, tick)
    pipe.execute()
    return True


def _reconcile_dropped(client: Client, pipe: Any, tick: int) -> None:
    ticks = range(max(0, tick - DROPPED_LOOKBACK_TICKS), tick + 1)
    read = client.pipeline(transaction=False)
    for t in ticks:
        read.hmget(keys.tick_counters(t), ["dropped", "dropped_counted"])
    for t, (dropped, counted) in zip(ticks, read.execute(), strict=True):
        delta = int(dropped or 0) - int(counted or 0)
        if delta > 0:
            # The hash exists (it holds "dropped"), so HINCRBY keeps its expiry.
            pipe.hincrby(keys.tick_counters(t), "dropped_counted", delta)
            pipe.hincrby(keys.METRICS, "evaluations_dropped", delta)


def _forecast_errors(client: Client, pipe: Any, tick: int) -> None:
    doc = client.get(keys.forecast(tick))
    if doc is None:
        return
    forecasts = TickForecasts.from_json(doc).figures()  # type: ignore[arg-type]
    read = client.pipeline(transaction=False)
    pids = sorted(forecasts)
    for pid in pids:
        read.hget(keys.feed(pid), str(tick))
    for pid, actual_doc in zip(pids, read.execute(), strict=True):
        if not actual_doc:
            continue  # not published (yet): nothing to compare
        actual = json.loads(actual_doc)
        for metric in FORECAST_METRICS:
            error = relative_error(forecasts[pid].get(metric), actual.get(metric))
            if error is None:
                continue
            prefix = f"{pid}:{metric}"
            pipe.hincrbyfloat(keys.METRICS_FORECAST_ERROR, f"{prefix}:sum", error)
            pipe.hincrby(keys.METRICS_FORECAST_ERROR, f"{prefix}:count", 1)
            pipe.hset(keys.METRICS_FORECAST_ERROR, f"{prefix}:last", repr(error))


def relative_error(forecast: Any, actual: Any) -> float | None:
    """``|forecast - actual| / actual``; None when either is missing or the actual is not > 0."""
    f, a = _number(forecast), _number(actual)
    if f is None or a is None or a <= 0:
        return None
    return abs(f - a) / a


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts ``(upper bound, count)``, ending with ``+Inf``, with sum and count."""

    buckets: list[tuple[float, int]]
    total: float
    count: int


@dataclass(frozen=True)
class Snapshot:
    counters: dict[str, float]
    tick_seconds: Histogram
    # (platform, metric) -> (sum of relative errors, observations, last relative error)
    forecast_error: dict[tuple[str, str], tuple[float, int, float]] = field(default_factory=dict)

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0.0)


@store_call("read metrics")
def snapshot(client: Client) -> Snapshot:
    """Every aggregated metric, read in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.METRICS)
    pipe.hgetall(keys.METRICS_TICK_SECONDS)
    pipe.hgetall(keys.METRICS_FORECAST_ERROR)
    counters_raw, hist_raw, errors_raw = pipe.execute()
    counters = {name: float(value) for name, value in counters_raw.items()}
    running = 0
    buckets = []
    for bound in (*TICK_SECONDS_BUCKETS, math.inf):
        running += int(hist_raw.get(f"le:{'+Inf' if bound == math.inf else repr(bound)}", 0))
        buckets.append((bound, running))
    histogram = Histogram(buckets, float(hist_raw.get("sum", 0)), int(hist_raw.get("count", 0)))
    errors: dict[tuple[str, str], tuple[float, int, float]] = {}
    for name in errors_raw:
        parts = name.rsplit(":", 2)
        if len(parts) != 3 or parts[2] != "count":
            continue
        pid, metric = parts[0], parts[1]
        prefix = f"{pid}:{metric}"
        errors[(pid, metric)] = (
            float(errors_raw.get(f"{prefix}:sum", 0)),
            int(errors_raw[name]),
            float(errors_raw.get(f"{prefix}:last", "nan")),
        )
    return Snapshot(counters, histogram, dict(sorted(errors.items())))
