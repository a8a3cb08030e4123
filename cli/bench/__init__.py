"""``campaign-engine bench``: throughput, tick latency and CPU of the real fleet, against two ceilings.

``run`` drives the fleet (``run.py``), ``ceilings`` measures Celery's and Redis's limits, ``measure``
holds the domain-free measurements, ``report`` the figures and the table, ``plot`` the chart.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from cli.bench.plot import plot
from cli.bench.report import WARMUP_TICKS, ceilings_text, tables
from cli.bench.run import Bench, Plan
from common.settings import Settings

MAX_CAMPAIGNS = 100_000


def parse_counts(text: str) -> list[int]:
    """``--campaigns``: positive whole numbers separated by commas; ``ValueError`` says what is wrong."""
    counts = []
    for part in text.split(","):
        try:
            count = int(part.strip())
        except ValueError:
            raise ValueError(f"must be whole numbers separated by commas, got {part.strip()!r}") from None
        if not 1 <= count <= MAX_CAMPAIGNS:
            raise ValueError(f"each count must be between 1 and {MAX_CAMPAIGNS:,}, got {count}")
        counts.append(count)
    return counts


def check_ticks(ticks: int) -> None:
    if ticks <= WARMUP_TICKS:
        raise ValueError(f"must be more than the {WARMUP_TICKS} warm-up ticks, got {ticks}")


def run_bench(settings: Settings, plan: Plan, out: Path, plot_path: Path | None, console: Console) -> None:
    with Progress(console=console, transient=True) as progress:
        result = Bench(settings, plan, progress).run()
    for summary in tables(result):
        console.print(summary)
    console.print(ceilings_text(result))
    result.write_json(out)
    if plot_path is not None:
        plot(result, plot_path)
    console.print(f"figures: {out}" + (f", plot: {plot_path}" if plot_path else ""))


__all__ = ["Plan", "check_ticks", "parse_counts", "run_bench"]
