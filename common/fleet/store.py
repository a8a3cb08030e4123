"""The campaign manager: campaigns and platforms kept in Redis.

A campaign's definition lives in ``{c:<id>}:campaign`` beside its budget (owned by the ledger), so
one hash slot holds everything the ledger scripts read. The fleet-wide sets ``ce:campaigns`` and
``ce:campaigns:active`` index them for listing and fan-out; the active ones' flights are also kept
in two sorted sets (by start and by end tick), so that the tick finds which are due, and which
ended, with range queries instead of reading every spec.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster

from common import keys
from common.errors import Conflict, InvalidInput, NotFound
from common.fleet import archive
from common.ledger import Balance, Ledger
from common.ledger.errors import from_reply, is_refusal
from common.ledger.scripts import source
from common.models import LEGACY_GOAL_FIELDS, Campaign, CampaignSpec, CampaignStatus, PlatformInfo
from common.money import from_micros, to_micros
from common.redis_conn import Client, Fields, store_call

log = logging.getLogger(__name__)

# Fields an update may change; the id is the key and never changes.
UPDATABLE = (frozenset(CampaignSpec.model_fields) | frozenset(LEGACY_GOAL_FIELDS)) - {"id"}


class CampaignStore:
    def __init__(self, client: Client) -> None:
        self.r = client
        self.ledger = Ledger(client)
        self._cluster = isinstance(client, RedisCluster)
        self._create = client.register_script(source("create", __package__))

    # --- platforms ------------------------------------------------------------------------------
    @store_call("register platforms")
    def register_platforms(self, platforms: Iterable[PlatformInfo]) -> None:
        mapping: Fields = {p.id: p.model_dump_json() for p in platforms}
        if mapping:
            self.r.hset(keys.PLATFORMS, mapping=mapping)

    @store_call("read platforms")
    def platforms(self) -> dict[str, PlatformInfo]:
        raw: dict[str, str] = self.r.hgetall(keys.PLATFORMS)  # type: ignore[assignment]
        return {pid: PlatformInfo.model_validate_json(doc) for pid, doc in sorted(raw.items())}

    @store_call("register a platform")
    def add_platform(self, platform: PlatformInfo) -> bool:
        """Register a platform, or replace what is known of it; True when it was new."""
        return bool(self.r.hset(keys.PLATFORMS, platform.id, platform.model_dump_json()))

    @store_call("remove a platform")
    def remove_platform(self, platform_id: str) -> None:
        """Forget a platform; ``Conflict`` while an active or paused campaign lists it (it could bid).

        Not atomic with campaign creation: a campaign created while the platform is removed may list
        it. It then bids nowhere there, as a platform without registry entry gets no forecast.
        """
        if not self.r.hexists(keys.PLATFORMS, platform_id):
            raise NotFound(f"platform {platform_id!r} is not registered")
        users = self.platform_users(platform_id)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise Conflict.one(
                "id", f"platform {platform_id!r} is used by {len(users)} active or paused campaign(s): {shown}"
            )
        # With it go its feed, volume history, fitted cycle and breaker: keys exist per registered platform.
        pipe = self.r.pipeline(transaction=False)
        pipe.hdel(keys.PLATFORMS, platform_id)
        pipe.hdel(keys.CYCLES, platform_id)
        pipe.zrem(keys.FEED_NEWEST, platform_id)
        for key in (keys.feed(platform_id), keys.feed_volume(platform_id), keys.platform_breaker(platform_id)):
            pipe.delete(key)
        pipe.execute()
        log.info("platform removed", extra={"platform": platform_id})

    def platform_users(self, platform_id: str) -> list[str]:
        """Ids of the active and paused campaigns that list ``platform_id``, sorted."""
        return sorted(
            c.id
            for c in self.get_many(self.ids()).values()
            if c.status is not CampaignStatus.FINISHED and platform_id in c.spec.platforms
        )

    # --- campaigns ------------------------------------------------------------------------------
    def _check_new(self, spec: CampaignSpec) -> None:
        """Checks that need the store: known platforms, and a flight end to pace the budget over."""
        if spec.end_tick is None:
            raise InvalidInput.one("end_tick", "is required: the budget is paced over the flight")
        known = self.platforms()
        unknown = sorted(set(spec.platforms) - set(known))
        if unknown:
            raise InvalidInput.one("platforms", f"unknown platform {unknown[0]!r}; known: {', '.join(known) or 'none'}")

    @store_call("check campaign")
    def check_new(self, spec: CampaignSpec) -> None:
        """Refuse (``InvalidInput``) what ``create`` would refuse for its content, writing nothing."""
        self._check_new(spec)

    @store_call("create campaign")
    def create(self, data: Mapping[str, Any] | CampaignSpec) -> Campaign:
        """Validate and store a new campaign with its budget; ``InvalidInput`` or ``Conflict`` (the id
        exists) writes nothing.

        Everything is checked first; then one script (``lua/create.lua``) writes the definition, the
        budget and its ledger entry, and on a single server the fleet-wide indexes too, so a creation is
        never seen half done. On a Redis Cluster those indexes live in other slots and follow at once.
        """
        spec = data if isinstance(data, CampaignSpec) else CampaignSpec.parse(dict(data))
        self._check_new(spec)
        indexes = () if self._cluster else (keys.CAMPAIGNS, keys.ACTIVE, keys.FLIGHT_STARTS, keys.FLIGHT_ENDS)
        fields = _spec_fields(spec)
        args = (spec.id, str(to_micros(spec.budget)), fields["spec"], fields["start_tick"], fields["end_tick"])
        try:
            created = self._create(keys=(keys.campaign(spec.id), keys.budget(spec.id), keys.ledger(spec.id), *indexes),
                                   args=args)  # fmt: skip
        except redis.ResponseError as exc:
            if not is_refusal(str(exc)):
                raise
            raise from_reply(str(exc), spec.id) from exc
        if not created:
            raise Conflict.one("id", f"campaign {spec.id!r} already exists")
        if self._cluster:
            pipe = self.r.pipeline(transaction=False)
            pipe.sadd(keys.CAMPAIGNS, spec.id)
            pipe.sadd(keys.ACTIVE, spec.id)
            _index_flight(pipe, spec)
            pipe.execute()
        log.debug("campaign created", extra={"campaign": spec.id, "budget": spec.budget})
        return Campaign(spec=spec, status=CampaignStatus.ACTIVE)

    @store_call("read campaign")
    def get(self, campaign_id: str) -> Campaign:
        raw: dict[str, str] = self.r.hgetall(keys.campaign(campaign_id))  # type: ignore[assignment]
        if not raw.get("spec"):
            raise NotFound(f"campaign {campaign_id!r} does not exist")
        return campaign_from_hash(raw)

    @store_call("read campaigns")
    def get_many(self, campaign_ids: Iterable[str]) -> dict[str, Campaign]:
        ids = list(campaign_ids)
        pipe = self.r.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(keys.campaign(cid))
        found = {}
        for cid, raw in zip(ids, pipe.execute(), strict=True):
            if not raw.get("spec"):
                continue
            try:
                found[cid] = campaign_from_hash(raw)
            except (ValueError, KeyError) as exc:
                # One unreadable record must not stop the tick for every other campaign.
                log.error("campaign %s is unreadable and skipped: %s", cid, exc, extra={"campaign": cid})
        return found

    @store_call("list campaigns")
    def ids(self, status: CampaignStatus | None = None) -> list[str]:
        key = keys.ACTIVE if status is CampaignStatus.ACTIVE else keys.CAMPAIGNS
        members: set[str] = self.r.smembers(key)  # type: ignore[assignment]
        return sorted(members)

    @store_call("list campaigns by flight")
    def flights(self, tick: int) -> tuple[list[str], list[str]]:
        """Active campaigns ``(due, ended)`` at ``tick``: in their flight, and past its end; each sorted by id.

        Read from the flight index alone; built first from ``ce:campaigns:active`` if it never was
        (campaigns created before the index existed).
        """
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(keys.FLIGHTS_INDEXED)
        pipe.zrangebyscore(keys.FLIGHT_ENDS, "-inf", tick)
        pipe.zrangebyscore(keys.FLIGHT_ENDS, f"({tick}", "+inf")
        pipe.zrangebyscore(keys.FLIGHT_STARTS, f"({tick}", "+inf")
        indexed, ended, running, waiting = pipe.execute()
        if not indexed:
            self.rebuild_flights()
            return self.flights(tick)
        if waiting:
            running = set(running).difference(waiting)
        return sorted(running), sorted(ended)

    @store_call("rebuild the flight index")
    def rebuild_flights(self) -> int:
        """Index the flight of every active campaign; returns how many. Safe to repeat or to race."""
        found = self.get_many(self.ids(CampaignStatus.ACTIVE))
        pipe = self.r.pipeline(transaction=False)
        active = [c.spec for c in found.values() if c.status is CampaignStatus.ACTIVE]
        for spec in active:
            _index_flight(pipe, spec)
        pipe.set(keys.FLIGHTS_INDEXED, "1")
        pipe.execute()
        log.info("flight index rebuilt from %d active campaigns", len(active))
        return len(active)

    @store_call("reindex campaign")
    def reindex(self, campaign_id: str) -> None:
        """Make the fleet-wide indexes agree with what is stored of one campaign (gone: out of them)."""
        try:
            campaign: Campaign | None = self.get(campaign_id)
        except (NotFound, ValueError, KeyError):
            campaign = None
        active = campaign is not None and campaign.status is CampaignStatus.ACTIVE
        self._index(campaign_id, campaign.spec if active and campaign is not None else None)

    def list(self, status: CampaignStatus | None = None) -> list[Campaign]:
        found = self.get_many(self.ids(status))
        return [c for c in found.values() if status is None or c.status is status]

    @store_call("update campaign")
    def update(self, campaign_id: str, changes: Mapping[str, Any]) -> Campaign:
        """Change fields of a campaign; a budget change goes through the ledger's ``adjust``."""
        if not isinstance(changes, Mapping) or not changes:
            raise InvalidInput.one("body", "give at least one field to change")
        bad = sorted(set(changes) - UPDATABLE)
        if bad:
            reason = "cannot be changed" if bad[0] == "id" else "is not a campaign field"
            raise InvalidInput.one(bad[0], reason)
        # One change at a time per campaign: the budget delta is computed from what is stored, so two
        # concurrent changes must not both apply theirs.
        lock = self.r.lock(keys.campaign_lock(campaign_id), timeout=10, blocking_timeout=5)
        if not lock.acquire():
            raise Conflict(f"campaign {campaign_id!r} is being changed by another request; try again")
        try:
            current = self.get(campaign_id)
            stored = current.spec.model_dump()
            if "goal" not in changes and any(name in changes for name in LEGACY_GOAL_FIELDS):
                del stored["goal"]  # a goal given in a former field replaces the goal
            merged = {**stored, **changes}
            try:
                spec = CampaignSpec.model_validate(merged)
            except ValidationError as exc:
                raise InvalidInput.from_pydantic(exc) from None
            self._check_new(spec)
            held = self.ledger.balance(campaign_id).budget
            if "budget" in changes:
                delta = to_micros(spec.budget) - held
                if delta:
                    # Refused (LedgerError) when lowering below spent + reserved; nothing else is written then.
                    self.ledger.adjust(campaign_id, delta)
            elif held > 0 and held != to_micros(spec.budget):
                # The ledger holds the budget (an `adjust` may have changed it since the spec was
                # written): a change of other fields keeps it, and the stored spec follows it.
                spec = spec.model_copy(update={"budget": from_micros(held)})
            # The status is not written back: a pause or finish racing this change keeps its effect.
            self.r.hset(keys.campaign(campaign_id), mapping=_spec_fields(spec))
            # Nor is a flight indexed that a racing pause or finish took out of the index (XX).
            pipe = self.r.pipeline(transaction=False)
            _index_flight(pipe, spec, only_update=True)
            pipe.execute()
        finally:
            lock.release()
        return self.get(campaign_id)

    def pause(self, campaign_id: str) -> Campaign:
        return self._set_status(campaign_id, CampaignStatus.PAUSED, allowed_from={CampaignStatus.ACTIVE})

    def resume(self, campaign_id: str) -> Campaign:
        return self._set_status(campaign_id, CampaignStatus.ACTIVE, allowed_from={CampaignStatus.PAUSED})

    def finish(self, campaign_id: str) -> Campaign:
        """Finish a campaign; it is archived and removed ``CE_ARCHIVE_AFTER_TICKS`` later (archive.py)."""
        finished = self._set_status(
            campaign_id, CampaignStatus.FINISHED, allowed_from={CampaignStatus.ACTIVE, CampaignStatus.PAUSED}
        )
        self.r.zadd(keys.ENDED, {campaign_id: archive.current_tick(self.r)}, nx=True)
        return finished

    @store_call("change campaign status")
    def _set_status(self, campaign_id: str, status: CampaignStatus, allowed_from: set[CampaignStatus]) -> Campaign:
        current = self.get(campaign_id)
        if current.status is not status:
            if current.status not in allowed_from:
                raise InvalidInput.one("status", f"a {current.status.value} campaign cannot become {status.value}")
            self.r.hset(keys.campaign(campaign_id), "status", status.value)
            log.info("campaign %s", status.value, extra={"campaign": campaign_id})
        # The fleet-wide indexes follow the status, also when a repeated call finds it already set
        # (so an index left behind by an interrupted change is repaired).
        self._index(campaign_id, current.spec if status is CampaignStatus.ACTIVE else None)
        return Campaign(spec=current.spec, status=status)

    def _index(self, campaign_id: str, active: CampaignSpec | None) -> None:
        """Put an active campaign (its spec given) in the fleet-wide indexes, or take it out of them."""
        pipe = self.r.pipeline(transaction=False)
        if active is not None:
            pipe.sadd(keys.ACTIVE, campaign_id)
            _index_flight(pipe, active)
        else:
            pipe.srem(keys.ACTIVE, campaign_id)
            _unindex_flight(pipe, campaign_id)
        pipe.execute()

    @store_call("delete campaign")
    def delete(self, campaign_id: str, *, status: str = "deleted", archive_maxlen: int = 100_000) -> None:
        """Remove a campaign and all its keys (budget, reservations, ledger, state), leaving its final
        balances in ``ce:archive`` (common/fleet/archive.py)."""
        self.get(campaign_id)
        archive.record(self.r, campaign_id, status, archive_maxlen)
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(keys.ENDED, campaign_id)
        pipe.srem(keys.ACTIVE, campaign_id)
        _unindex_flight(pipe, campaign_id)
        pipe.srem(keys.CAMPAIGNS, campaign_id)
        pipe.execute()
        tag = keys.campaign_tag(campaign_id)
        doomed = list(self.r.scan_iter(match=f"{_escape(tag)}:*", count=500))
        for start in range(0, len(doomed), 500):
            self.r.delete(*doomed[start : start + 500])

    def balance(self, campaign_id: str) -> Balance:
        return self.ledger.balance(campaign_id)


def _index_flight(pipe: Any, spec: CampaignSpec, *, only_update: bool = False) -> None:
    """Queue the flight of an active campaign into the index (``only_update``: if it is there)."""
    end = math.inf if spec.end_tick is None else spec.end_tick
    pipe.zadd(keys.FLIGHT_STARTS, {spec.id: spec.start_tick}, xx=only_update)
    pipe.zadd(keys.FLIGHT_ENDS, {spec.id: end}, xx=only_update)


def _unindex_flight(pipe: Any, campaign_id: str) -> None:
    pipe.zrem(keys.FLIGHT_STARTS, campaign_id)
    pipe.zrem(keys.FLIGHT_ENDS, campaign_id)


def _escape(pattern: str) -> str:
    """Escape glob characters of a literal key prefix for SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]{}\\" else ch for ch in pattern)


def _spec_fields(spec: CampaignSpec) -> Fields:
    return {
        "spec": spec.model_dump_json(),
        "start_tick": str(spec.start_tick),
        "end_tick": "" if spec.end_tick is None else str(spec.end_tick),
    }


def campaign_fields(spec: CampaignSpec, status: CampaignStatus) -> Fields:
    """The fields of ``{c:<id>}:campaign`` as the store writes them (the ledger scripts read some)."""
    return {**_spec_fields(spec), "status": status.value}


def campaign_from_hash(raw: Mapping[str, str]) -> Campaign:
    return Campaign(spec=_parse_spec(raw["spec"]), status=CampaignStatus(raw.get("status", "active")))


@lru_cache(maxsize=65_536)
def _parse_spec(document: str) -> CampaignSpec:
    """Specs are read every tick and change rarely: parse each stored document once per process."""
    return CampaignSpec.model_validate(json.loads(document))
