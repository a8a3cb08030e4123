"""The dashboard in a real headless Chromium, against a live fleet: it renders, updates live, and shows
what Redis holds."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys
from common.fleet.state import read as read_state
from common.fleet.store import CampaignStore
from common.ledger import Ledger
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market
from tests.test_api_http import api_process

# Debian names the browser chromium, Ubuntu and others chromium-browser.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CAMPAIGNS = 24


def _page_rows(page: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#campaigns tbody tr",
        """rows => rows.map(r => ({
            id: r.dataset.campaign, status: r.dataset.status,
            spent: Number(r.dataset.spent), value: Number(r.dataset.value),
            conversions: Number(r.dataset.conversions), budget: Number(r.dataset.budget),
            spentText: r.querySelector('.spent').textContent, valueText: r.querySelector('.value').textContent,
            conversionsText: r.querySelector('.conversions').textContent,
            goalStatus: r.dataset.goalStatus, goalAchieved: r.dataset.goalAchieved,
            goalShortfall: r.dataset.goalShortfall, goalText: r.querySelector('.goal').textContent,
        }))""",
    )
    return rows


def _amount(text: str) -> float:
    return float(text.replace(",", "").strip())


def _drawn_pixels(page: Any, selector: str) -> list[int]:
    """How many pixels each matching canvas has painted (a blank canvas has none)."""
    counts: list[int] = page.eval_on_selector_all(
        selector,
        """canvases => canvases.map(c => {
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
            return n;
        })""",
    )
    return counts


@pytest.mark.slow
def test_dashboard_shows_the_live_fleet(r: redis.Redis, redis_url: str, tmp_path: Path, artifacts_dir: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("no chromium or chromium-browser on PATH (Debian package chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    market = write_market(tmp_path / "market.json")
    ids = load_campaigns(r, market, CAMPAIGNS)
    store = CampaignStore(r)
    # A goal far beyond any budget: at risk from the first tick, with its shortfall.
    store.update(ids[1], {"goal": {"metric": "conversions", "target": 1e9}})
    goals = {ids[1]}
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="1.0", CE_API_TOKEN="dashboard-token")
    problems: list[str] = []
    with api_process(env, tmp_path / "api-logs") as (url, _api), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1500, "height": 1300},
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            # /health answers 503 while the fleet is down (no worker once it stops): the banner shows it.
            page.on(
                "console",
                lambda msg: (
                    problems.append(msg.text)
                    if msg.type == "error"
                    and not (msg.location.get("url", "").endswith("/health") and "503" in msg.text)
                    else None
                ),
            )
            with running(env, tmp_path / "logs") as group:
                wait_for_ticks(r, 3, group, timeout=60)
                # A goal below what a campaign has already bought: met.
                met_id = next(cid for cid in ids if cid not in goals and read_state(r, cid).clicks > 0)
                store.update(met_id, {"goal": {"metric": "clicks", "target": read_state(r, met_id).clicks / 2}})
                goals.add(met_id)
                page.goto(url + "/")
                page.wait_for_function(f"document.querySelectorAll('#campaigns tbody tr').length === {CAMPAIGNS}")
                page.wait_for_function("document.getElementById('live').textContent === 'live'")
                # Bids stream in as they are made, and keep coming.
                page.wait_for_function("document.querySelectorAll('#decisions tbody tr').length >= 5", timeout=20_000)
                seen = int(page.text_content("#decisions-count") or 0)
                page.wait_for_function(f"Number(document.getElementById('decisions-count').textContent) > {seen}",
                                       timeout=20_000)  # fmt: skip
                page.wait_for_function("document.getElementById('workers-online').textContent === '1'")
                last_tick = int(r.get(keys.LAST_TICK) or 0)
                page.wait_for_function(f"Number(document.getElementById('last-tick').textContent) >= {last_tick}")
                page.wait_for_function("document.querySelectorAll('#platforms canvas').length === 12")
                # The capacity of the newest tick, as common/fleet/capacity.py judges it.
                capacity = page.text_content("#capacity") or ""
                assert capacity == "ok" or capacity.startswith("over "), capacity
                assert "of its due campaigns" in (page.text_content("#capacity-note") or "")
                page.wait_for_timeout(1500)
                assert all(n > 200 for n in _drawn_pixels(page, "#platforms canvas, .system canvas"))
                assert len(page.query_selector_all("#campaigns svg.spark path")) > 0, "ROI trends are drawn"
                page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)

            # With the fleet stopped Redis holds still: the next refresh must show exactly what it holds.
            stopped = time.time()
            page.wait_for_function(f"Number(document.body.dataset.updated) > {stopped}", timeout=15_000)
            rows = {row["id"]: row for row in _page_rows(page)}
            assert sorted(rows) == sorted(ids)
            total_spent = 0.0
            for cid in ids:
                row = rows[cid]
                spent = Ledger(r).balance(cid).spent / 1e6
                state = read_state(r, cid)
                assert row["status"] == r.hget(keys.campaign(cid), "status")
                assert row["spent"] == pytest.approx(spent, abs=1e-9)
                assert row["value"] == pytest.approx(state.value, abs=1e-9)
                assert row["conversions"] == pytest.approx(state.conversions, abs=1e-9)
                assert _amount(row["spentText"]) == pytest.approx(spent, abs=0.0051)
                assert _amount(row["valueText"]) == pytest.approx(state.value, abs=0.0051)
                assert _amount(row["conversionsText"]) == pytest.approx(state.conversions, abs=0.0051)
                if cid not in goals:
                    assert row["goalStatus"] == "" and row["goalText"].strip() == "-"
                total_spent += spent
            assert total_spent > 0, "the fleet spent"
            met, at_risk = rows[met_id], rows[ids[1]]
            assert met["goalStatus"] == "met" and float(met["goalAchieved"]) == pytest.approx(
                read_state(r, met_id).clicks
            )
            assert "met" in met["goalText"]
            assert at_risk["goalStatus"] == "at risk"
            shortfall = read_state(r, ids[1]).goal
            assert shortfall is not None and float(at_risk["goalShortfall"]) == pytest.approx(shortfall.shortfall)
            assert 1e9 - shortfall.shortfall > 0 and "short" in at_risk["goalText"]
            assert _amount(page.text_content("#kpi-spent") or "") == pytest.approx(total_spent, abs=0.0051)
            assert page.text_content("#last-tick") == r.get(keys.LAST_TICK)
            page.wait_for_function("document.getElementById('workers-online').textContent === '0'", timeout=15_000)
        finally:
            browser.close()
    assert problems == []
