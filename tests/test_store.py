"""The campaign store on a real Redis: lifecycle, validation errors that write nothing, key layout."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from common import keys
from common.errors import Conflict, InvalidInput, LedgerError, NotFound
from common.fleet.store import CampaignStore
from common.models import CampaignStatus, PlatformInfo


def campaign(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "c1", "budget": 100.0, "value_per_conversion": 40.0,
        "platforms": {"search": 0.02, "social": 0.05}, "start_tick": 0, "end_tick": 720,
    }  # fmt: skip
    base.update(overrides)
    return base


@pytest.fixture
def store(r: redis.Redis) -> CampaignStore:
    s = CampaignStore(r)
    s.register_platforms([PlatformInfo(id="search", price_sigma=0.4), PlatformInfo(id="social", price_sigma=0.5)])
    return s


def test_create_read_list(store: CampaignStore) -> None:
    created = store.create(campaign(max_bid=3.0, target_cpa=30.0))
    assert created.status is CampaignStatus.ACTIVE
    got = store.get("c1")
    assert got == created
    assert store.ids() == ["c1"] and store.ids(CampaignStatus.ACTIVE) == ["c1"]
    balance = store.balance("c1")
    assert (balance.budget, balance.remaining, balance.reserved, balance.spent) == (100_000_000, 100_000_000, 0, 0)


def test_every_key_of_a_campaign_carries_its_hash_tag(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign(id="abc"))
    own = [k for k in r.keys("*") if not k.startswith("ce:")]
    assert own, "the campaign wrote keys of its own"
    assert all(k.startswith("{c:abc}:") for k in own)


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"budget": -5}, "budget", "greater than 0"),
        ({"budget": 0}, "budget", "greater than 0"),
        ({"budget": float("nan")}, "budget", "finite"),
        ({"value_per_conversion": float("inf")}, "value_per_conversion", "finite"),
        ({"platforms": {"tv": 0.1}}, "platforms", "unknown platform 'tv'"),
        ({"platforms": {}}, "platforms", "at least 1"),
        ({"start_tick": 10, "end_tick": 5}, "end_tick", "after start_tick"),
        ({"id": ""}, "id", "at least 1"),
        ({"id": "has space"}, "id", "letters, digits"),
        ({"id": "{c:x}"}, "id", "letters, digits"),
        ({"max_bid": -1}, "max_bid", "greater than 0"),
        ({"colour": "red"}, "colour", "not permitted"),
        ({"budget": 1e-7}, "budget", "between 0.000001"),
        ({"budget": 1e10}, "budget", "between 0.000001"),
        ({"end_tick": None}, "end_tick", "required"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    store: CampaignStore, r: redis.Redis, overrides: dict[str, Any], field: str, reason: str
) -> None:
    before = r.dbsize()
    with pytest.raises(InvalidInput) as info:
        store.create(campaign(**overrides))
    fields = [f for f, _ in info.value.errors]
    assert any(f == field or f.startswith(field) for f in fields), info.value.errors
    assert reason in str(info.value)
    assert r.dbsize() == before


def test_duplicate_id_is_refused(store: CampaignStore) -> None:
    store.create(campaign())
    with pytest.raises(Conflict) as info:
        store.create(campaign(budget=5))
    assert not isinstance(info.value, InvalidInput) and [f for f, _ in info.value.errors] == ["id"]
    assert store.balance("c1").budget == 100_000_000


def test_pause_resume_finish(store: CampaignStore) -> None:
    store.create(campaign())
    assert store.pause("c1").status is CampaignStatus.PAUSED
    assert store.ids(CampaignStatus.ACTIVE) == []
    assert store.resume("c1").status is CampaignStatus.ACTIVE
    assert store.ids(CampaignStatus.ACTIVE) == ["c1"]
    assert store.finish("c1").status is CampaignStatus.FINISHED
    with pytest.raises(InvalidInput) as info:
        store.resume("c1")
    assert [f for f, _ in info.value.errors] == ["status"]


def test_update_budget_goes_through_the_ledger(store: CampaignStore) -> None:
    store.create(campaign())
    updated = store.update("c1", {"budget": 150.0, "max_bid": 2.5})
    assert updated.spec.budget == 150.0 and updated.spec.max_bid == 2.5
    assert store.balance("c1").budget == 150_000_000
    assert store.balance("c1").remaining == 150_000_000
    store.ledger.reserve("c1", 3, {"search": 120_000_000})
    with pytest.raises(LedgerError):
        store.update("c1", {"budget": 50.0})
    assert store.get("c1").spec.budget == 150.0, "a refused budget change changes nothing"


def test_update_refuses_bad_fields(store: CampaignStore) -> None:
    store.create(campaign())
    with pytest.raises(InvalidInput) as info:
        store.update("c1", {"id": "c2"})
    assert [f for f, _ in info.value.errors] == ["id"]
    with pytest.raises(InvalidInput) as info:
        store.update("c1", {"budget": -1})
    assert [f for f, _ in info.value.errors] == ["budget"]
    assert store.get("c1").spec.budget == 100.0


def test_delete_removes_every_key(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign())
    store.create(campaign(id="c2"))
    store.delete("c1")
    assert not [k for k in r.keys("*") if "c:c1}" in k]
    assert store.ids() == ["c2"]
    with pytest.raises(NotFound):
        store.get("c1")


def test_concurrent_budget_changes_apply_once_each(store: CampaignStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store.create(campaign(budget=250.0))
    targets = [300.0, 300.0, 400.0, 275.0, 300.0, 260.0]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda b: _retrying_update(store, b), targets))
    spec_budget = store.get("c1").spec.budget
    assert spec_budget in targets
    assert store.balance("c1").budget == round(spec_budget * 1_000_000), "the ledger holds what the campaign says"


def _retrying_update(store: CampaignStore, budget: float) -> None:
    for _ in range(50):
        try:
            store.update("c1", {"budget": budget})
            return
        except Conflict:
            continue
    raise AssertionError("the campaign lock was never free")


def test_an_update_never_undoes_a_status_change(store: CampaignStore) -> None:
    store.create(campaign())
    store.finish("c1")
    updated = store.update("c1", {"max_bid": 4.0})
    assert updated.status is CampaignStatus.FINISHED
    assert store.ids(CampaignStatus.ACTIVE) == []


def test_a_repeated_status_change_repairs_the_index(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign())
    r.srem("ce:campaigns:active", "c1")  # as if a change had been interrupted
    store.resume("c1")
    assert store.ids(CampaignStatus.ACTIVE) == ["c1"]


def _flights(r: redis.Redis) -> dict[str, tuple[float, float]]:
    starts = dict(r.zrange(keys.FLIGHT_STARTS, 0, -1, withscores=True))
    ends = dict(r.zrange(keys.FLIGHT_ENDS, 0, -1, withscores=True))
    assert set(starts) == set(ends)
    return {cid: (starts[cid], ends[cid]) for cid in starts}


def test_the_flight_index_follows_every_change(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign(id="a", start_tick=5, end_tick=50))
    store.create(campaign(id="b", start_tick=0, end_tick=30))
    assert _flights(r) == {"a": (5, 50), "b": (0, 30)}
    store.update("a", {"start_tick": 10, "end_tick": 60})
    assert _flights(r)["a"] == (10, 60)
    store.pause("a")
    assert set(_flights(r)) == {"b"}
    store.update("a", {"end_tick": 70})  # a paused campaign stays out of the index
    assert set(_flights(r)) == {"b"}
    store.resume("a")
    assert _flights(r)["a"] == (10, 70)
    store.finish("b")
    assert set(_flights(r)) == {"a"}
    store.delete("a")
    assert _flights(r) == {}


def test_flights_are_the_due_and_the_ended_active_campaigns(store: CampaignStore) -> None:
    store.create(campaign(id="early", start_tick=0, end_tick=10))
    store.create(campaign(id="late", start_tick=20, end_tick=40))
    store.create(campaign(id="now", start_tick=10, end_tick=30))
    store.create(campaign(id="paused", start_tick=0, end_tick=40))
    store.pause("paused")
    assert store.flights(9) == (["early"], [])
    assert store.flights(10) == (["now"], ["early"])
    assert store.flights(20) == (["late", "now"], ["early"])
    assert store.flights(30) == (["late"], ["early", "now"])
    assert store.flights(40) == ([], ["early", "late", "now"])


def test_campaigns_created_before_the_flight_index_are_indexed_once(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign(id="old", start_tick=0, end_tick=50))
    store.create(campaign(id="gone", start_tick=0, end_tick=50))
    store.pause("gone")
    # As a store without the index left them: in ce:campaigns:active only, one by mistake.
    r.delete(keys.FLIGHT_STARTS, keys.FLIGHT_ENDS, keys.FLIGHTS_INDEXED)
    r.sadd(keys.ACTIVE, "gone")
    store.create(campaign(id="new", start_tick=0, end_tick=20))
    assert store.flights(25) == (["old"], ["new"])
    assert set(_flights(r)) == {"old", "new"} and r.exists(keys.FLIGHTS_INDEXED)
    r.zrem(keys.FLIGHT_STARTS, "old")  # built once: not rebuilt while the marker stands
    r.zrem(keys.FLIGHT_ENDS, "old")
    assert store.flights(25) == ([], ["new"])


def test_reindex_takes_a_stale_entry_out(store: CampaignStore, r: redis.Redis) -> None:
    store.create(campaign(id="a", start_tick=0, end_tick=50))
    store.pause("a")
    r.zadd(keys.FLIGHT_STARTS, {"a": 0})  # as if the pause had been interrupted
    r.zadd(keys.FLIGHT_ENDS, {"a": 50})
    store.reindex("a")
    assert _flights(r) == {}
    store.reindex("nonexistent")
    assert _flights(r) == {}
