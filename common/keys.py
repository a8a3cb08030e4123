"""Every Redis key the engine uses, on one screen.

Keys that belong to a campaign carry its hash tag ``{c:<id>}`` so that they share one slot and the
ledger's Lua scripts stay valid on Redis Cluster. Fleet-wide keys live under ``ce:``.

Two layouts serve the tick task, whose cost must not grow with the campaigns' specs or the season:
the flight index (``FLIGHT_STARTS``, ``FLIGHT_ENDS``) answers which campaigns are due with range
queries, and the volume history (``feed_volume``) gives the cycle fit a season of volumes in one
read (docs/engine.md, "The tick's cost": ``begin`` at 20,000 campaigns and a 43,200-tick season
went from 1,217 ms to 35 ms).
"""

from __future__ import annotations

import re

PREFIX = "ce"

# Campaign ids become part of keys: braces would break the hash tag, spaces and colons are ambiguous.
# Anchored with \A and \Z, not ^ and $: "$" also matches before a final newline, so "abc\n" would pass.
ID_CHARACTERS = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
CAMPAIGN_ID_PATTERN = re.compile(rf"\A{ID_CHARACTERS}\Z")
# The same rule for JSON Schema and pydantic's Rust regex engine, where $ is the end of the text only.
ID_JSON_PATTERN = f"^{ID_CHARACTERS}$"
PLATFORM_ID_PATTERN = CAMPAIGN_ID_PATTERN


def campaign_tag(campaign_id: str) -> str:
    return f"{{c:{campaign_id}}}"


# --- per campaign (one hash slot each) ---------------------------------------------------------
def campaign(campaign_id: str) -> str:
    """Hash: the campaign's definition (JSON under ``spec``) and ``status``."""
    return f"{campaign_tag(campaign_id)}:campaign"


def budget(campaign_id: str) -> str:
    """Hash of integer micro-units: ``budget``, ``remaining``, ``reserved``, ``spent``, ``overdraft``.

    Five fields, whatever the flight's length.
    Written only by the ledger's scripts, read only as ``common.ledger.Balance``.
    """
    return f"{campaign_tag(campaign_id)}:budget"


def reservation(campaign_id: str, tick: int) -> str:
    """Hash: what ``reserve`` granted per platform for one tick, and whether it was settled.

    Deleted by compaction once its tick is at or below the watermark (``history``): the records of
    about ``CE_LEDGER_DETAIL_TICKS`` ticks (plus any still unsettled) are kept.
    """
    return f"{campaign_tag(campaign_id)}:res:{tick}"


def reservations(campaign_id: str) -> str:
    """Sorted set of open reservation ticks (score = tick), for the sweeper.

    Bounded by the sweeper: nothing stays unsettled past ``CE_RESERVATION_GRACE_TICKS``.
    """
    return f"{campaign_tag(campaign_id)}:open"


def ledger(campaign_id: str) -> str:
    """Stream: one entry per money movement.

    Compaction folds its entries up to the watermark into ``history`` and trims them: a few
    entries per tick of the last ``CE_LEDGER_DETAIL_TICKS`` ticks are kept.
    """
    return f"{campaign_tag(campaign_id)}:ledger"


def history(campaign_id: str) -> str:
    """Hash: the campaign's compacted ledger (common/ledger/lua/compact.lua).

    ``watermark`` (every reservation at or below it is closed and its record gone; those ticks are
    refused), the folded totals per entry kind (``adjust``, ``reserve``, ``settle``, ``release``,
    ``charge``, ``overdraft``), ``spent:<platform>``, ``records`` and ``entries`` (how many were
    removed), and before the first compaction ``first``, the lowest tick an unreserved settle wrote.
    About ten fields and one per platform: it does not grow with the flight.
    """
    return f"{campaign_tag(campaign_id)}:history"


def adjustments(campaign_id: str) -> str:
    """Hash: operation id -> delta of each budget adjustment, so a retried adjust applies once.

    One field per operator change of the budget: grows with those, not with ticks.
    """
    return f"{campaign_tag(campaign_id)}:adjust"


def state(campaign_id: str) -> str:
    """Hash: the decision engine's pacing state and the campaign's outcomes so far (common/fleet/state.py).

    A campaign with a goal also has the field ``goal``: its progress and projection as of the last
    decision, one JSON document rewritten every tick (bounded: one field per campaign). The hash goes
    with the campaign.
    """
    return f"{campaign_tag(campaign_id)}:state"


def campaign_lock(campaign_id: str) -> str:
    """Short-lived lock that serialises changes to one campaign's definition."""
    return f"{campaign_tag(campaign_id)}:lock"


def evaluated(campaign_id: str, tick: int) -> str:
    """String set once per (campaign, tick) to the token of the delivery that took it.

    A duplicate delivery of an evaluation finds another token and does nothing; a client retry finds
    its own (common/fleet/evaluation.py). Each expires after ``EVALUATION_MARK_TTL`` (600 s), and
    compaction deletes those of the ticks it compacts (common/ledger/compaction.py), so a backtest,
    which runs many ticks in 600 s, keeps at most ``CE_LEDGER_DETAIL_TICKS`` and a few per campaign.
    """
    return f"{campaign_tag(campaign_id)}:eval:{tick}"


def late(campaign_id: str, tick: int) -> str:
    """String: JSON of a (campaign, tick) whose bids' outcomes are pending (common/fleet/late.py ``LateRecord``).

    Deleted once settled; given up (deleted) when its tick is ``CE_LEDGER_DETAIL_TICKS`` - 2 old, and
    expires a day (or those ticks' length plus an hour) after it was written: a few per campaign at most.
    """
    return f"{campaign_tag(campaign_id)}:late:{tick}"


# --- fleet-wide -----------------------------------------------------------------------------------
CAMPAIGNS = f"{PREFIX}:campaigns"  # set of every campaign id
ACTIVE = f"{PREFIX}:campaigns:active"  # set of ids with status active
# The active campaigns' flights, so the tick finds the due ones by range without reading their specs.
# Members are exactly those of ACTIVE (the store writes both together); each holds one member per
# active campaign, removed when it is paused, finished or deleted.
FLIGHT_STARTS = f"{PREFIX}:campaigns:active:start"  # sorted set: active id, score = start_tick
FLIGHT_ENDS = f"{PREFIX}:campaigns:active:end"  # sorted set: active id, score = end_tick (inf: none)
# Finished campaigns waiting for their archive (common/fleet/archive.py): id, score = the tick it finished;
# each leaves once archived, CE_ARCHIVE_AFTER_TICKS later.
ENDED = f"{PREFIX}:campaigns:ended"
# Stream: one compact entry per archived (finished or deleted) campaign, its final balances and spec,
# capped near CE_ARCHIVE_MAXLEN entries.
ARCHIVE = f"{PREFIX}:archive"
# Hash: campaign id -> "<remaining micros> <end tick, empty for none>" as of its last evaluation, for the
# fan-out's order (common/fleet/stake.py). Evaluations write their campaigns' fields, one HSET per group;
# the tick task deletes the fields of campaigns no longer due, so it holds the due campaigns and those
# that stopped being due since the last tick.
STAKES = f"{PREFIX}:campaigns:stakes"
FLIGHTS_INDEXED = f"{PREFIX}:campaigns:active:indexed"  # string, set once the two were built from ACTIVE
PLATFORMS = f"{PREFIX}:platforms"  # hash platform id -> JSON PlatformInfo (id, price_sigma): the registry
# Capped stream of every bid placed: one entry per campaign and tick that bid, its bids packed in one
# field (common/fleet/decisions.py). Each tick trims it to its due campaigns x CE_DECISIONS_RETENTION_TICKS
# entries, never above CE_DECISIONS_MAXLEN: a number of ticks, whatever the fleet's size.
DECISIONS = f"{PREFIX}:decisions"
CLOCK = f"{PREFIX}:clock"  # hash: epoch (unix seconds of tick 0), tick_seconds
# Hash "<host>:<pid>" -> JSON of that process's clock offset against Redis TIME (common/fleet/clock.py);
# the whole hash expires 120 s after its last write, readers skip entries older than that.
CLOCK_OFFSETS = f"{PREFIX}:clock:offsets"
LAST_TICK = f"{PREFIX}:tick:last"  # number of the newest tick that ran
# Stream: one summary entry per finished tick (common/fleet/stats.py), capped near
# CE_TICK_STATS_RETENTION_TICKS (1,000, about 0.1 MB) entries: what /api/ticks can ask for.
TICK_STATS = f"{PREFIX}:tick:stats"
# Sorted set: platform id, score = the newest tick with published figures (ZADD GT), for the feed's
# staleness (common/fleet/staleness.py); one member per registered platform, removed with it.
FEED_NEWEST = f"{PREFIX}:feed:newest"
# Sorted set "<tick>:<campaign id>", score = tick: the (campaign, tick) whose outcomes are pending, one
# member per ``late`` key, removed with it (common/fleet/late.py).
LATE = f"{PREFIX}:late"
# Hash platform id -> JSON of the volume cycle last fitted (common/fleet/cycles.py): one field per
# platform, replaced at each refit.
CYCLES = f"{PREFIX}:cycles"
# Counter the benchmark's no-op task increments (campaign-engine bench): one key, reset by each bench run.
BENCH_NOOP = f"{PREFIX}:bench:noop"


def tick_claim(tick: int) -> str:
    """``SET NX`` guard: a tick number runs once even with two beats.

    Like every per-tick key below, deleted by the tick ``TICK_KEYS_KEPT`` (600) ticks later
    (common/fleet/tick.py ``forget``), or expired a day after its tick, whichever comes first.
    """
    return f"{PREFIX}:tick:{tick}:claim"


def platform_breaker(platform_id: str) -> str:
    """Hash: the circuit breaker of one platform (common/fleet/breaker.py), shared by every worker.

    ``state`` (closed, open, half_open), ``failures`` (failing ticks in a row), ``last_failure`` and
    ``last_success`` (ticks), ``open_until`` (the tick from which it is tried again), ``opened`` (times
    it opened), ``error`` (the last failure, one line). A few fields per platform, deleted with the
    platform (``CampaignStore.remove_platform``), as are its ``feed``, ``feed_volume`` and ``CYCLES`` field.
    """
    return f"{PREFIX}:platform:{platform_id}:breaker"


def tick_counters(tick: int) -> str:
    """Hash of counters that evaluations of one tick increment (evaluated, bids, spend, late...).

    Campaigns with a goal add ``goals_<status>`` (met, on_track, at_risk) and
    ``goals_shortfall_<metric>``: a fixed set of fields, read by the metrics (common/fleet/goals.py).

    Deleted 600 ticks later, or expired a day after its tick (``TICK_KEY_TTL``, common/fleet/tick.py).
    """
    return f"{PREFIX}:tick:{tick}:counters"


def feed(platform_id: str) -> str:
    """Hash tick -> JSON figures (cpc, cvr, volume) published after the tick ended.

    The tick trims it to ``FEED_RETENTION`` ticks (the path's base, the window and the dashboard);
    the season the volume cycle needs is in ``feed_volume``.
    """
    return f"{PREFIX}:feed:{platform_id}"


def feed_volume(platform_id: str) -> str:
    """String: the volume history the cycle fit reads, a ring of float64 pairs (tick + 1, volume).

    Tick t sits at byte 16 * (t mod 100,000) (``common.fleet.feed.VOLUME_HISTORY_TICKS``): 1.6 MB
    per platform (1.8 MB allocated), all of it allocated when the ring is created, written once per
    published tick with SETRANGE, overwritten a lap later.
    """
    return f"{PREFIX}:feed:{platform_id}:volume"


def forecast(tick: int) -> str:
    """String: JSON forecasts and price spread of every platform, computed once for the tick.

    Expires after an hour (``CACHE_TTL_SECONDS``, common/forecast/cache.py), or is deleted 600 ticks
    later by the tick, whichever comes first; its lock expires after 5 s.

    Written and read only as ``common.forecast.cache.TickForecasts``.
    """
    return f"{PREFIX}:forecast:{tick}"


def forecast_lock(tick: int) -> str:
    return f"{PREFIX}:forecast:{tick}:lock"


def tick_latency(tick: int) -> str:
    """Sorted set holding the worst evaluation latency of a tick (``ZADD GT``); deleted 600 ticks later."""
    return f"{PREFIX}:tick:{tick}:latency"


# --- metrics aggregated across every worker process (common/metrics.py) -----------------------------
METRICS = f"{PREFIX}:metrics"  # hash of fleet-wide counters: evaluations by outcome, reservations, spend
METRICS_TICK_SECONDS = f"{PREFIX}:metrics:tick_seconds"  # hash: tick duration histogram buckets, sum, count
METRICS_FORECAST_ERROR = f"{PREFIX}:metrics:forecast_error"  # hash: "<platform>:<metric>:<sum|count|last>"


def metrics_recorded(tick: int) -> str:
    """``SET NX`` guard: a tick's summary enters the metrics once; deleted 600 ticks later, else a day."""
    return f"{PREFIX}:metrics:tick:{tick}"
