"""Flights in wall time: date-times to ticks on the fleet's clock, over the API, and campaign files."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result
from starlette.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app
from common import keys
from common.errors import InvalidInput
from common.fleet.clock import Clock
from common.fleet.store import CampaignStore
from common.flights import PlannedClock, iso, parse_time, time_of, to_ticks
from common.models import CampaignGoal, GoalMetric, PlatformInfo
from common.settings import Settings
from tests.ledger_helpers import snapshot

EPOCH = 1_800_000_000.0  # on a whole 2-second tick
TOKEN = "flight-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPBACK, LOCAL = ("127.0.0.1", 50000), "http://127.0.0.1:8000"  # a client on this machine
REPO = Path(__file__).resolve().parents[1]
BASE = {"id": "winter", "budget": 80.0, "value_per_conversion": 40.0, "platforms": {"search": 0.02}}


def at(seconds: float) -> str:
    """The moment ``seconds`` after the test epoch, as an ISO-8601 date-time at +01:00."""
    return datetime.fromtimestamp(EPOCH + seconds, UTC).astimezone(timezone(timedelta(hours=1))).isoformat()


# --- the conversion -----------------------------------------------------------------------------------
def test_times_on_tick_boundaries_map_exactly_and_back() -> None:
    got = to_ticks({**BASE, "start": at(20), "end": at(3600)}, EPOCH, 2.0)
    assert (got["start_tick"], got["end_tick"]) == (10, 1800) and "start" not in got and "end" not in got
    back = {"start": iso(time_of(10, EPOCH, 2.0)), "end": iso(time_of(1800, EPOCH, 2.0))}
    assert back["start"].endswith("Z")
    assert to_ticks(back, EPOCH, 2.0) == {"start_tick": 10, "end_tick": 1800}
    # Ticks of half a second from an epoch with a fraction: microseconds still read back as the tick.
    for tick in (0, 1, 7, 123_457):
        assert to_ticks({"start": iso(time_of(tick, EPOCH + 0.5, 0.5))}, EPOCH + 0.5, 0.5)["start_tick"] == tick


def test_a_flight_covers_the_ticks_wholly_inside_it() -> None:
    got = to_ticks({"start": at(21.5), "end": at(41.5)}, EPOCH, 2.0)
    assert (got["start_tick"], got["end_tick"]) == (11, 20)  # tick 11 starts at 22 s, tick 19 ends at 40 s
    assert to_ticks({"start": at(-500)}, EPOCH, 2.0)["start_tick"] == 0  # before the fleet's clock: at once


def test_offsets_name_the_same_moment() -> None:
    assert parse_time("start", "2027-01-15T09:00:00+01:00") == parse_time("start", "2027-01-15T08:00:00Z")
    assert parse_time("start", "2027-01-15T03:00:00-05:00") == parse_time("start", "2027-01-15T08:00:00+00:00")


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"start": "2027-01-15T09:00:00"}, "start", "has no UTC offset"),
        ({"end": "next tuesday"}, "end", "must be an ISO-8601 date-time"),
        ({"end": 1800}, "end", "must be an ISO-8601 date-time string"),
        ({"start": at(0), "start_tick": 3}, "start", "give start or start_tick, not both"),
        ({"start": at(100), "end": at(101)}, "end", "at least one whole tick"),
        ({"start": at(100), "end": at(50)}, "end", "at least one whole tick"),
    ],
)
def test_bad_times_name_the_field(data: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        to_ticks(data, EPOCH, 2.0)
    assert info.value.errors[0][0] == field and reason in info.value.errors[0][1]


def test_the_planned_epoch_writes_nothing(r: redis.Redis) -> None:
    clock = Clock(r, 2.0)
    plan = clock.planned_epoch()
    assert clock.stored_epoch() is None and not r.exists(keys.CLOCK)
    assert clock.epoch() == plan or clock.epoch() == plan + 2.0  # a boundary may pass between the two
    assert clock.stored_epoch() == clock.planned_epoch() == clock.epoch()
    assert PlannedClock(2.0, EPOCH).epoch() == EPOCH


# --- the API ------------------------------------------------------------------------------------------
@pytest.fixture
def client(redis_url: str, r: redis.Redis) -> Iterator[TestClient]:
    CampaignStore(r).add_platform(PlatformInfo(id="search"))
    with TestClient(create_app(Settings(redis_url=redis_url, api_token=TOKEN)), client=LOOPBACK, base_url=LOCAL) as c:
        yield c


def _start_clock(r: redis.Redis) -> None:
    r.hset(keys.CLOCK, mapping={"epoch": repr(EPOCH), "tick_seconds": "2.0"})


def test_a_campaign_in_wall_time_gets_ticks_and_shows_both(client: TestClient, r: redis.Redis) -> None:
    _start_clock(r)
    created = client.post("/campaigns", json={**BASE, "start": at(20), "end": at(3600)}, headers=AUTH)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["spec"]["start_tick"], body["spec"]["end_tick"]) == (10, 1800)
    assert body["flight"] == {
        "start_tick": 10, "end_tick": 1800,
        "start": iso(time_of(10, EPOCH, 2.0)), "end": iso(time_of(1800, EPOCH, 2.0)),
    }  # fmt: skip
    assert parse_time("start", body["flight"]["start"]) == parse_time("start", at(20))

    moved = client.patch("/campaigns/winter", json={"end": at(7200)}, headers=AUTH)
    assert moved.status_code == 200, moved.text
    assert moved.json()["flight"]["end_tick"] == 3600
    both = client.patch("/campaigns/winter", json={"end": at(7200), "end_tick": 5}, headers=AUTH)
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "end"
    early = client.patch("/campaigns/winter", json={"end": at(10)}, headers=AUTH)
    assert early.status_code == 422 and early.json()["errors"][0]["field"] == "end", early.text


def test_ticks_are_still_accepted(client: TestClient) -> None:
    """Before the fleet's clock has started, a flight in ticks has no date-times yet."""
    created = client.post("/campaigns", json={**BASE, "start_tick": 0, "end_tick": 90}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["flight"] == {"start_tick": 0, "end_tick": 90, "start": None, "end": None}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"start": "2027-01-15T09:00:00", "end": at(3600)}, "start"),
        ({"start": at(0), "end": "2027-01-15"}, "end"),
        ({"start": at(0), "start_tick": 4, "end": at(3600)}, "start"),
        ({"end": at(3600), "budget": -1}, "budget"),
    ],
)
def test_bad_times_are_422_and_change_nothing(
    client: TestClient, r: redis.Redis, change: dict[str, Any], field: str
) -> None:
    before = snapshot(r)
    refused = client.post("/campaigns", json={**BASE, **change}, headers=AUTH)
    assert refused.status_code == 422, refused.text
    assert field in [e["field"] for e in refused.json()["errors"]]
    assert snapshot(r) == before  # the fleet's clock was not started either


def test_naive_times_with_other_errors_name_them_all(client: TestClient) -> None:
    refused = client.post(
        "/campaigns", json={**BASE, "budget": 0, "start": "2027-01-15T09:00:00", "end": at(3600)}, headers=AUTH
    )
    assert {e["field"] for e in refused.json()["errors"]} == {"start", "budget"}


# --- import and export --------------------------------------------------------------------------------
def _cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``campaign-engine campaigns ...`` as its own process."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "campaigns", *args], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, CE_REDIS_URL=redis_url, PYTHONPATH=str(REPO)), check=False, timeout=60,
    )  # fmt: skip


def _run(redis_url: str, *args: str) -> Result:
    """The same command in this process (many of them run in one test)."""
    return CliRunner().invoke(app, ["campaigns", *args], env={"CE_REDIS_URL": redis_url})


def _campaigns(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        row: dict[str, Any] = {**BASE, "id": f"c{i}", "budget": 10.0 + i, "platforms": {"search": 0.01 * (i + 1)}}
        if i % 2:
            row.update(start=at(2 * i), end=at(3600 + 2 * i), max_bid=1.5)
        else:
            row.update(start_tick=i, end_tick=900 + i, target_cpa=12.25)
        if i == 2:
            row["goal"] = {"metric": "clicks", "target": 500.0}
        if i == 3:
            row["conversion_target"] = 7.5  # the goal's former field, read as a conversions goal
        rows.append(row)
    return rows


CSV_BAD = """id,budget,value_per_conversion,platforms,start,end
ok,10,40,search=0.02,{start},{end}
naive,10,40,search=0.02,2027-01-15T09:00:00,{end}
poor,-1,40,search=0.02,{start},{end}
mars,10,40,mars=0.02,{start},{end}
cells,10,40,search,{start},{end}
ok,10,40,search=0.02,{start},{end}
"""


def test_import_refuses_every_bad_row_by_line_and_writes_nothing(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    CampaignStore(r).add_platform(PlatformInfo(id="search"))
    before = snapshot(r)
    path = tmp_path / "campaigns.csv"
    path.write_text(CSV_BAD.format(start=at(20), end=at(3600)))
    done = _cli(redis_url, "import", str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert lines[:5] == [
        "line 3: start: has no UTC offset: give one, such as 2026-12-02T10:00:00+01:00 or a trailing Z",
        "line 4: budget: Input should be greater than 0",
        "line 5: platforms: unknown platform 'mars'; known: search",
        "line 6: platforms: must be id=multiplier pairs joined by ';' (search=0.02;social=0.05), got 'search'",
        "line 7: id: 'ok' is also on line 2",
    ]
    assert "5 row(s)" in lines[5] and "nothing was imported" in lines[5] and "Traceback" not in done.stderr
    assert snapshot(r) == before

    jsonl = tmp_path / "campaigns.txt"
    jsonl.write_text(json.dumps(BASE | {"end_tick": 9}) + "\n[]\n{broken\n" + json.dumps(BASE | {"end": "soon"}) + "\n")
    done = _cli(redis_url, "import", str(jsonl), "--format", "jsonl")
    assert done.returncode == 2
    assert done.stderr.splitlines()[:3] == [
        "line 2: line: must be a JSON object",
        "line 3: line: is not JSON: Expecting property name enclosed in double quotes (column 2)",
        "line 4: end: must be an ISO-8601 date-time such as 2026-12-02T10:00:00+01:00, got 'soon'",
    ]
    assert snapshot(r) == before
    unknown = _cli(redis_url, "import", str(jsonl))
    assert unknown.returncode == 2 and "--format: cannot tell from the extension" in unknown.stderr


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_export_and_import_round_trip(redis_url: str, r: redis.Redis, tmp_path: Path, suffix: str) -> None:
    store = CampaignStore(r)
    store.add_platform(PlatformInfo(id="search"))
    _start_clock(r)
    source = tmp_path / f"source.{suffix}"
    source.write_text("".join(json.dumps(row) + "\n" for row in _campaigns(6)))
    if suffix == "csv":  # the same campaigns as CSV, written by the JSON Lines import and a CSV export
        loaded = _run(redis_url, "import", str(source), "--format", "jsonl")
        assert loaded.exit_code == 0, loaded.output
        assert _run(redis_url, "export", str(source)).exit_code == 0
        for cid in store.ids():
            store.delete(cid)
    imported = _run(redis_url, "import", str(source))
    assert imported.exit_code == 0, imported.output
    assert "imported 6 campaign(s)" in imported.output
    first = {c.id: c.spec for c in store.list()}
    assert first["c1"].start_tick == 1 and first["c1"].end_tick == 1801 and first["c0"].end_tick == 900
    assert first["c2"].goal == CampaignGoal(metric=GoalMetric.CLICKS, target=500.0)
    assert first["c3"].goal == CampaignGoal(metric=GoalMetric.CONVERSIONS, target=7.5)

    exported, again = tmp_path / f"exported.{suffix}", tmp_path / f"again.{suffix}"
    assert _run(redis_url, "export", str(exported)).exit_code == 0
    r.flushdb()
    store.add_platform(PlatformInfo(id="search"))
    _start_clock(r)
    assert _run(redis_url, "import", str(exported)).exit_code == 0
    assert {c.id: c.spec for c in store.list()} == first
    assert _run(redis_url, "export", str(again)).exit_code == 0
    assert again.read_text() == exported.read_text()
    text = exported.read_text()
    rows = list(csv.DictReader(text.splitlines())) if suffix == "csv" else [json.loads(x) for x in text.splitlines()]
    assert [row["end"] for row in rows][1] == iso(time_of(1801, EPOCH, 2.0))
    assert not any(row.get("start_tick") or row.get("end_tick") for row in rows)  # in wall time once the clock runs

    in_ticks = tmp_path / f"ticks.{suffix}"
    assert _run(redis_url, "export", str(in_ticks), "--ticks", "--status", "active").exit_code == 0
    assert "1801" in in_ticks.read_text() and "Z" not in in_ticks.read_text()


def test_an_import_that_fails_midway_takes_back_what_it_created(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """A campaign created by someone else between the check and the import: none of the file stays."""
    from cli.campaign_files import import_campaigns

    store = CampaignStore(r)
    store.add_platform(PlatformInfo(id="search"))
    path = tmp_path / "campaigns.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _campaigns(4) if "end_tick" in row))
    original = store.create

    def racing(spec: Any) -> Any:
        if spec.id == "c2":
            original({**BASE, "id": "c2", "end_tick": 50})
        return original(spec)

    store.create = racing  # type: ignore[method-assign]
    with pytest.raises(Exception, match="already exists"):
        import_campaigns(store, Clock(r, 2.0), path, "jsonl")
    assert store.ids() == ["c2"] and store.get("c2").spec.end_tick == 50
