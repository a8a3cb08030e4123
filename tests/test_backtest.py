"""Backtests through the fleet's path: scored by `campaign-engine score`, identical across executors,
causal, and on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from rich.console import Console

from cli.backtest import run_backtest
from common.market.generator import generate
from common.market.scenario import PlatformSeries, Scenario
from common.settings import Settings
from tests.shared import score


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.json"
    generate(campaigns=12, platforms=3, ticks=90, seed=21, shock_rate=0.02).save(path)
    return path


@pytest.fixture
def varied(tmp_path: Path) -> Path:
    """Shocks, outages, late and short flights, max bids and target CPAs, in a few seconds."""
    path = tmp_path / "varied.json"
    generate(campaigns=30, platforms=4, ticks=160, seed=21, shock_rate=0.02).save(path)
    return path


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    yield Settings(redis_url=redis_url, run_dir=tmp_path, campaigns_per_task=5)


def _backtest(settings: Settings, scenario: Path, out: Path, executor: str = "inline") -> dict[str, object]:
    report = run_backtest(settings, scenario, out, None, executor, Console(quiet=True), show_progress=False)  # type: ignore[arg-type]
    return report.totals()


def test_decision_log_is_scored_clean_and_our_report_agrees(settings: Settings, varied: Path, tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    ours = _backtest(settings, varied, out)
    rep = score(varied, out)
    assert rep["violations"] == 0, rep["first_violations"]
    assert rep["mismatches"] == 0, rep["first_mismatches"]
    assert rep["efficiency"] > rep["baseline_efficiency"]
    assert rep["bids"] == ours["bids"] > 0
    assert ours["efficiency"] == pytest.approx(rep["efficiency"], rel=1e-6)
    assert ours["budget_use"] == pytest.approx(rep["budget_use"], rel=1e-6)
    for line in out.read_text().splitlines():
        doc = json.loads(line)
        assert list(doc) == ["tick", "campaign", "platform", "bid", "spend_cap", "cost", "clicks", "conversions"]


def test_every_cent_moves_through_the_ledger(settings: Settings, small: Path, tmp_path: Path) -> None:
    from common.fleet.fleet import Fleet

    out = tmp_path / "decisions.jsonl"
    _backtest(settings, small, out)
    spent_log: dict[str, float] = {}
    for line in out.read_text().splitlines():
        doc = json.loads(line)
        spent_log[doc["campaign"]] = spent_log.get(doc["campaign"], 0.0) + doc["cost"]
    fleet = Fleet.from_settings(settings, scenario=Scenario.load(small))
    try:
        for spec in Scenario.load(small).campaigns:
            b = fleet.ledger.balance(spec.id)
            assert b.budget == b.remaining + b.reserved + b.spent and b.reserved == 0 and b.remaining >= 0
            # The ledger rounds each charge up to the micro-unit: never below what the platform charged.
            logged = spent_log.get(spec.id, 0.0)
            bids = sum(1 for line in out.read_text().splitlines() if json.loads(line)["campaign"] == spec.id)
            assert logged * 1e6 - 1e-3 <= b.spent <= logged * 1e6 + bids
            assert b.spent <= b.budget
    finally:
        fleet.r.close()


def _changed_from(scenario: Scenario, k: int) -> Scenario:
    platforms = {}
    for pid, s in scenario.platforms.items():
        factor = np.where(np.arange(scenario.ticks) >= k, 1.7, 1.0)
        platforms[pid] = PlatformSeries(pid, s.price_sigma, s.cpc * factor, np.clip(s.cvr / factor, 0, 1), s.volume)
    return Scenario(scenario.name, scenario.ticks, scenario.tick_seconds, platforms, scenario.campaigns)


def test_decisions_before_a_change_do_not_depend_on_it(
    redis_server: object, settings: Settings, small: Path, tmp_path: Path
) -> None:
    import redis as redis_lib

    k = 50
    changed = tmp_path / "changed.json"
    _changed_from(Scenario.load(small), k).save(changed)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _backtest(settings, small, a)
    redis_lib.Redis.from_url(settings.state_url).flushall()
    _backtest(settings, changed, b)

    def before(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if json.loads(line)["tick"] < k]

    def bids_after(path: Path) -> list[tuple[object, ...]]:
        docs = [json.loads(line) for line in path.read_text().splitlines()]
        return [(d["tick"], d["campaign"], d["platform"], d["bid"]) for d in docs if d["tick"] > k]

    assert before(a) and before(a) == before(b)
    assert bids_after(a) != bids_after(b), "the change does reach the bids after it"

    def placed_at_k(path: Path) -> list[tuple[object, ...]]:
        docs = [json.loads(line) for line in path.read_text().splitlines()]
        return [(d["campaign"], d["platform"], d["bid"], d["spend_cap"]) for d in docs if d["tick"] == k]

    # The bids of tick k itself are made before tick k's figures exist: only their outcomes differ.
    assert placed_at_k(a) and placed_at_k(a) == placed_at_k(b)


@pytest.mark.slow
def test_inline_and_celery_executors_write_the_same_log(
    redis_server: object, settings: Settings, small: Path, tmp_path: Path
) -> None:
    import redis as redis_lib

    inline, celery = tmp_path / "inline.jsonl", tmp_path / "celery.jsonl"
    _backtest(settings, small, inline, "inline")
    redis_lib.Redis.from_url(settings.state_url).flushall()
    _backtest(settings, small, celery, "celery")
    assert inline.read_bytes() == celery.read_bytes()
    assert inline.stat().st_size > 0


def test_the_season_setting_reaches_the_forecasts(
    r: redis.Redis, settings: Settings, small: Path, tmp_path: Path
) -> None:
    """By default the volume cycle spans the scenario; CE_SEASON_TICKS=0 plans without it."""
    cycled, flat = tmp_path / "cycled.jsonl", tmp_path / "flat.jsonl"
    _backtest(settings, small, cycled)
    r.flushdb()
    _backtest(settings.model_copy(update={"season_ticks": 0}), small, flat)
    assert cycled.read_bytes() != flat.read_bytes()
    for log in (cycled, flat):
        assert score(small, log)["violations"] == 0


def test_command_line_writes_a_log_the_scorer_accepts(redis_url: str, small: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "decisions.jsonl", tmp_path / "report.json"
    env = dict(os.environ, CE_REDIS_URL=redis_url, CE_RUN_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "backtest", str(small), "--out", str(out), "--report", str(report),
         "--aggressiveness", "0.9", "--no-progress"],
        capture_output=True, text=True, env=env, check=False, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "efficiency" in done.stdout
    lines = out.read_text().splitlines()
    summary = json.loads(report.read_text())
    assert summary["aggressiveness"] == 0.9
    assert summary["bids"] == len(lines) > 0
    rep = score(small, out)
    assert rep["violations"] == 0 and rep["mismatches"] == 0
    assert summary["efficiency"] == pytest.approx(rep["efficiency"], rel=1e-6)
