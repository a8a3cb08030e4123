"""``campaign-engine pareto``: sweep ``aggressiveness``, backtest each point, plot the frontier."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt
from rich.console import Console
from rich.progress import Progress

from cli.backtest import run_backtest
from common.backtest.pareto import ParetoPoint, frontier
from common.backtest.runner import BacktestReport
from common.settings import Settings

DEFAULT_SETTINGS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)


def sweep(settings: Settings, scenario_path: Path, levels: Sequence[float], console: Console) -> list[BacktestReport]:
    reports = []
    with tempfile.TemporaryDirectory(prefix="ce-pareto-") as tmp, Progress(console=console, transient=True) as bar:
        task = bar.add_task("sweeping aggressiveness", total=len(levels))
        for level in levels:
            report = run_backtest(
                settings.model_copy(update={"aggressiveness": level}), scenario_path,
                Path(tmp) / f"decisions-{level}.jsonl", None, "inline", console, show_progress=False,
            )  # fmt: skip
            reports.append(report)
            bar.advance(task)
    return reports


def plot(reports: Sequence[BacktestReport], out: Path) -> None:
    """Value against spend and against waste, one point per backtest, with the hindsight optimum."""
    points = [ParetoPoint.of(r) for r in reports]
    totals = reports[0].totals()  # every backtest of a sweep has the same scenario, so the same optimum
    best_value, best_spend = totals["optimum_value"], totals["optimum_spend"]
    front = frontier(points)
    fig, (by_spend, by_waste) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    axes: list[tuple[Any, Callable[[ParetoPoint], float], str]] = [
        (by_spend, attrgetter("spend"), "spend"),
        (by_waste, attrgetter("waste"), "waste (paid above click value)"),
    ]
    for ax, x_of, label in axes:
        ax.scatter([x_of(p) for p in points], [p.value for p in points], color="#9aa5b1", label="backtest", zorder=2)
        line = sorted(front, key=x_of)
        ax.plot([x_of(p) for p in line], [p.value for p in line], "-o", color="#1f77b4", label="frontier", zorder=3)
        for p in points:
            ax.annotate(f"{p.aggressiveness:g}", (x_of(p), p.value), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)  # fmt: skip
        ax.scatter([best_spend if label == "spend" else 0.0], [best_value], marker="*", s=220, color="#d62728",
                   label="hindsight optimum", zorder=4)  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("value won")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"{reports[0].scenario}: value against spend and waste, by aggressiveness")
    fig.savefig(out, dpi=120)
    plt.close(fig)
