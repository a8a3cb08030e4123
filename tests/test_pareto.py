from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.backtest.pareto import ParetoPoint, frontier
from common.market.generator import generate


def point(level: float, value: float, spend: float, waste: float) -> ParetoPoint:
    return ParetoPoint(level, value, spend, waste, None)


def test_frontier_keeps_only_undominated_points() -> None:
    cheap = point(0.5, 100, 50, 0)
    good = point(1.0, 150, 80, 1)
    dominated = point(1.1, 140, 90, 2)  # less value, more spend and waste than `good`
    wasteful = point(1.5, 151, 80, 9)  # a little more value for much more waste: kept
    assert frontier([wasteful, dominated, good, cheap]) == [cheap, good, wasteful]


def test_equal_points_do_not_dominate_each_other() -> None:
    a, b = point(1.0, 10, 5, 0), point(1.1, 10, 5, 0)
    assert frontier([a, b]) == [a, b]


def test_pareto_command_writes_a_plot(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.json"
    generate(campaigns=5, platforms=2, ticks=40, seed=8).save(scenario)
    out = tmp_path / "frontier.png"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "pareto", str(scenario), "--out", str(out), "--levels", "0.7,1.0,1.3"],
        capture_output=True, text=True, check=False, timeout=110,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in done.stdout.splitlines() if line.startswith("aggressiveness")]
    assert len(rows) == 3 and any(line.rstrip().endswith("frontier") for line in rows)


def test_pareto_refuses_bad_levels(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.json"
    generate(campaigns=1, platforms=1, ticks=5, seed=8).save(scenario)
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "pareto", str(scenario), "--levels", "1,lots"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--levels" in done.stderr and "Traceback" not in done.stderr
