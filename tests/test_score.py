"""``campaign-engine score``: rules, mismatches and the efficiency of a decision log, and its agreement
with the reference scorer where that is present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli.backtest import run_backtest
from common.backtest.hindsight import optimum
from common.backtest.score import score
from common.errors import InvalidInput
from common.market.generator import generate
from common.market.model import outcome
from common.market.scenario import Scenario
from common.settings import Settings
from tests.shared import REPO, reference_scorer, scenario_path

SCENARIO = generate(campaigns=4, platforms=2, ticks=30, seed=5, late_flights=0.0)


def _line(scenario: Scenario, cid: str, pid: str, tick: int, bid: float, cap: float, **override: Any) -> str:
    """A log line whose outcomes are the market's, unless overridden."""
    spec = next(c for c in scenario.campaigns if c.id == cid)
    s = scenario.platforms[pid]
    got = outcome(
        spec.platforms.get(pid, 0.0) * s.volume[tick], s.cpc[tick], s.price_sigma, s.cvr[tick],
        spec.value_per_conversion, bid, cap,
    )  # fmt: skip
    doc = {"tick": tick, "campaign": cid, "platform": pid, "bid": bid, "spend_cap": cap,
           "cost": got.cost, "clicks": got.clicks, "conversions": got.conversions}  # fmt: skip
    return json.dumps({**doc, **override})


def _listed(cid: str) -> str:
    """A platform the campaign lists."""
    return next(iter(next(c for c in SCENARIO.campaigns if c.id == cid).platforms))


def test_a_clean_log_is_scored_against_the_optimum() -> None:
    cid = SCENARIO.campaigns[0].id
    pid = _listed(cid)
    lines = [_line(SCENARIO, cid, pid, t, 1.0, 0.5) for t in range(5)]
    result = score(SCENARIO, lines)
    report = result.report(per_campaign=True)
    assert result.clean and report["violations"] == report["mismatches"] == 0
    assert report["bids"] == 5 and report["campaigns"] == len(SCENARIO.campaigns)
    first = report["per_campaign"][0]
    assert first["optimum_value"] == pytest.approx(optimum(SCENARIO.campaigns[0], SCENARIO).value)
    assert 0 < first["spend"] <= 2.5 and first["efficiency"] == pytest.approx(first["value"] / first["optimum_value"])
    assert report["baseline_efficiency"] > 0


def test_each_rule_broken_is_named_with_its_line() -> None:
    doc = SCENARIO.to_dict()
    pid, other = list(SCENARIO.platforms)
    doc["campaigns"][0].update(platforms={pid: 0.05}, budget=0.01)
    scenario = Scenario.from_dict(doc)
    cid = doc["campaigns"][0]["id"]
    lines = [
        _line(scenario, cid, pid, 1, 5.0, 0.004),
        _line(scenario, cid, pid, 1, 5.0, 0.004),  # twice on one platform and tick
        json.dumps({"tick": 2, "campaign": "nobody", "platform": pid, "bid": 1.0, "spend_cap": 1.0}),
        _line(scenario, cid, pid, 3, 5.0, 0.004),  # 0.012 spent by now: over the budget
        _line(scenario, cid, pid, 4, 0.0, 5.0),  # no bid: not a bid at all
        json.dumps({"tick": 5, "campaign": cid, "platform": other, "bid": 1.0, "spend_cap": 1.0}),
    ]
    result = score(scenario, lines)
    assert result.violations == [
        f"line 2: {cid} bids twice on {pid} at tick 1",
        "line 3: unknown campaign nobody",
        f"line 6: {cid} bids on platform {other} it does not list",
        f"{cid}: spend 0.012000 exceeds budget 0.01 (first at tick 3)",
    ]
    assert result.report()["bids"] == 3 and result.mismatches == []


def test_bids_outside_the_flight_or_above_max_bid_are_violations() -> None:
    doc = SCENARIO.to_dict()
    doc["campaigns"][0].update(start_tick=10, end_tick=20, max_bid=0.5)
    scenario = Scenario.from_dict(doc)
    cid, pid = doc["campaigns"][0]["id"], _listed(doc["campaigns"][0]["id"])
    lines = [_line(scenario, cid, pid, 5, 0.4, 1.0), _line(scenario, cid, pid, 12, 0.6, 1.0)]
    found = score(scenario, lines).violations
    assert found == [
        f"line 1: {cid} bids at tick 5 outside its flight [10,20)",
        f"line 2: {cid} bid 0.6 above max_bid 0.5",
    ]


def test_an_outcome_the_market_does_not_give_is_a_mismatch() -> None:
    cid = SCENARIO.campaigns[1].id
    pid = _listed(cid)
    result = score(SCENARIO, [_line(SCENARIO, cid, pid, 3, 2.0, 1.0, cost=123.0)])
    assert not result.clean and result.violations == []
    assert result.mismatches[0].startswith("line 1: cost 123.0 but the market gives")


def test_a_bad_line_is_refused_with_its_number() -> None:
    with pytest.raises(InvalidInput) as info:
        score(SCENARIO, ['{"tick": 1, "campaign": "c00000", "platform": "search", "bid": 1, "spend_cap": 1}', "{oops"])
    assert str(info.value).startswith("decisions line 2: ")
    with pytest.raises(InvalidInput) as info:
        score(SCENARIO, ['{"tick": -1, "campaign": "c00000", "platform": "search", "bid": 1, "spend_cap": 1}'])
    assert "decisions line 1: tick" in str(info.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "score", *args], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)), check=False, timeout=60,
    )  # fmt: skip


def test_command_line_exit_codes(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    SCENARIO.save(path)
    cid = SCENARIO.campaigns[0].id
    clean, broken, bad = tmp_path / "clean.jsonl", tmp_path / "broken.jsonl", tmp_path / "bad.jsonl"
    clean.write_text(_line(SCENARIO, cid, _listed(cid), 2, 1.0, 0.5) + "\n")
    broken.write_text(_line(SCENARIO, cid, _listed(cid), 2, 1.0, 0.5, clicks=99.0) + "\n")
    bad.write_text("not json\n")
    done = _cli(str(path), str(clean), "--per-campaign")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bids"] == 1 and len(report["per_campaign"]) == len(SCENARIO.campaigns)
    assert _cli(str(path), str(broken)).returncode == 1
    refused = _cli(str(path), str(bad))
    assert refused.returncode == 2 and "decisions line 1" in refused.stderr and "Traceback" not in refused.stderr


def _compare(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        elif isinstance(value, list):
            assert sorted(ours[key]) == sorted(value), key
        else:
            assert ours[key] == value, key


def test_agrees_with_the_reference_scorer(redis_url: str, tmp_path: Path) -> None:
    """On a backtest's log, and on the same log with rules broken and outcomes changed."""
    reference = reference_scorer()
    path, log = tmp_path / "varied.json", tmp_path / "decisions.jsonl"
    generate(campaigns=30, platforms=4, ticks=160, seed=21, shock_rate=0.02).save(path)
    settings = Settings(redis_url=redis_url, run_dir=tmp_path, campaigns_per_task=10)
    run_backtest(settings, path, log, None, "inline", Console(quiet=True), show_progress=False)
    lines = log.read_text().splitlines()
    assert lines
    tampered = tmp_path / "tampered.jsonl"
    docs = [json.loads(line) for line in lines]
    docs[0]["cost"] *= 1.5
    docs[1]["bid"] *= 50
    docs[1]["spend_cap"] *= 1e4
    docs.append(dict(docs[2]))
    docs.append({**docs[3], "campaign": "nobody"})
    docs.append({**docs[4], "tick": 159, "campaign": "c00001"})
    tampered.write_text("".join(json.dumps(d) + "\n" for d in docs))
    scenario = Scenario.load(path)
    for decisions in (log, tampered):
        ours = score(scenario, decisions.read_text().splitlines()).report(per_campaign=True)
        theirs = reference.score(str(path), str(decisions), per_campaign=True)
        per_ours, per_theirs = ours.pop("per_campaign"), theirs.pop("per_campaign")
        _compare(ours, theirs)
        for a, b in zip(per_ours, per_theirs, strict=True):
            _compare(a, b)
    assert ours["violations"] > 0 and ours["mismatches"] > 0


def test_agrees_with_the_reference_scorer_on_the_example_scenarios_baseline() -> None:
    """The baseline and the optimum of every example scenario, with an empty log."""
    reference = reference_scorer()
    for name in ("smooth-20", "shocks-200"):
        path = scenario_path(name)
        ours = score(Scenario.load(path), []).report(per_campaign=True)
        theirs = reference.score(str(path), os.devnull, per_campaign=True)
        for a, b in zip(ours["per_campaign"], theirs["per_campaign"], strict=True):
            assert a["optimum_value"] == pytest.approx(b["optimum_value"], rel=1e-9), a["campaign"]
            assert a["baseline_value"] == pytest.approx(b["baseline_value"], rel=1e-9, abs=1e-12), a["campaign"]
