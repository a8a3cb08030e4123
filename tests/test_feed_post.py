"""``campaign-engine feed post FILE``: figures from CSV or JSON Lines, all or none, each bad row named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from common import keys
from common.fleet.feed import FeedStore
from common.fleet.store import CampaignStore
from common.models import PlatformFigures, PlatformInfo
from tests.ledger_helpers import snapshot

REPO = Path(__file__).resolve().parents[1]


def post(redis_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "feed", "post", str(path)], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, CE_REDIS_URL=redis_url, PYTHONPATH=str(REPO)), check=False, timeout=60,
    )  # fmt: skip


def test_a_csv_file_is_published(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    CampaignStore(r).register_platforms([PlatformInfo(id="search"), PlatformInfo(id="social")])
    path = tmp_path / "figures.csv"
    path.write_text(
        "tick,platform,cpc,cvr,volume\n0,search,0.8,0.03,120\n0,social,0.5,0.01,300\n1,search,0.82,0.031,118.5\n"
    )
    done = post(redis_url, path)
    assert done.returncode == 0, done.stderr
    assert "published 3 figure(s)" in done.stdout
    feed = FeedStore(r)
    assert feed.figures(["search", "social"], 1) == {"search": PlatformFigures(cpc=0.82, cvr=0.031, volume=118.5)}
    assert feed.newest(["search", "social"]) == {"search": 1, "social": 0}
    again = post(redis_url, path)
    assert again.returncode == 0 and "3 published before, kept" in again.stdout


def test_a_bad_row_refuses_the_whole_file_naming_each(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    CampaignStore(r).register_platforms([PlatformInfo(id="search")])
    rows = [
        {"tick": 0, "platform": "search", "cpc": 0.8, "cvr": 0.03, "volume": 120},
        {"tick": 0, "platform": "tv", "cpc": 0.8, "cvr": 0.03, "volume": 120},
        {"tick": 1, "platform": "search", "cpc": -1, "cvr": 0.03, "volume": 120},
        {"tick": 2, "platform": "search", "cpc": 0.8, "cvr": 1.5, "volume": 120, "colour": "red"},
        {"tick": 0, "platform": "search", "cpc": 0.9, "cvr": 0.03, "volume": 110},
        {"tick": 900, "platform": "search", "cpc": 0.8, "cvr": 0.03, "volume": 120},
        {"tick": "soon", "platform": "search", "cpc": 0.8, "cvr": 0.03},
    ]
    path = tmp_path / "figures.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\nnot json\n")
    before = snapshot(r)
    done = post(redis_url, path)
    assert done.returncode == 2
    err = " ".join(done.stderr.split())
    for expected in (
        "line 2: platform: unknown platform 'tv'",
        "line 3: cpc: Input should be greater than 0",
        "line 4: cvr: Input should be less than or equal to 1",
        "line 4: colour: unknown field",
        "line 5: tick: platform 'search' at tick 0 is also on line 1",
        "line 6: tick: is 900 ticks past the tick under way",
        "line 7: volume: missing",
        "line 7: tick: must be a whole number",
        "line 8: line: is not JSON",
        "7 row(s) of",
        "nothing was published",
    ):
        assert expected in err, (expected, err)
    assert snapshot(r) == before
    assert not r.exists(keys.feed("search"))
