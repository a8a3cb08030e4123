"""``campaign-engine backtest``: a scenario through the fleet's own path, tick by tick."""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.processes import ProcessGroup
from cli.redis_server import RedisServer
from cli.up import child_env, simulated
from common.backtest.runner import BacktestReport, Executor, InlineExecutor, run, write_report
from common.fleet.fleet import Fleet
from common.market.scenario import Scenario
from common.settings import Settings

ExecutorName = Literal["inline", "celery"]


def run_backtest(
    settings: Settings,
    scenario_path: Path,
    out: Path,
    report_path: Path | None,
    executor_name: ExecutorName,
    console: Console,
    show_progress: bool = True,
) -> BacktestReport:
    scenario = Scenario.load(scenario_path)
    with ExitStack() as stack:
        if settings.redis_url is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ce-backtest-")))
            # A backtest's state is thrown away afterwards: no append-only file.
            server = stack.enter_context(RedisServer(directory, appendonly=False))
            settings = settings.model_copy(update={"redis_url": server.url})
        # Simulated outcomes never go to the live fleet's NATS stream (their ids would collide).
        settings = simulated(settings).model_copy(
            update={"scenario": scenario_path.resolve(), "decisions_nats_url": None}
        )
        fleet = Fleet.from_settings(settings, scenario=scenario)
        stack.callback(fleet.r.close)
        executor: Executor
        executor = _celery_executor(settings, fleet, stack) if executor_name == "celery" else InlineExecutor(fleet)
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, disable=not show_progress, transient=True,
        )  # fmt: skip
        with progress, open(out, "w") as fh:
            task = progress.add_task(f"{scenario.name} ({executor_name})", total=scenario.ticks)
            report = run(
                fleet, scenario, executor, fh, executor_name=executor_name,
                on_tick=lambda _t: progress.advance(task),
            )  # fmt: skip
    if report_path is not None:
        write_report(report, report_path)
    return report


def _celery_executor(settings: Settings, fleet: Fleet, stack: ExitStack) -> Executor:
    from worker.app import QUEUES, create_app
    from worker.backtest import CeleryExecutor

    assert settings.redis_url is not None and settings.scenario is not None
    log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ce-backtest-logs-")))
    env = child_env(settings, settings.redis_url, settings.scenario)
    env["CE_CAMPAIGNS_PER_TASK"] = str(settings.campaigns_per_task)
    env["CE_DECISIONS_NATS_URL"] = ""  # set in this environment, it names the live fleet's
    env["CE_AGGRESSIVENESS"] = repr(settings.aggressiveness)
    if settings.season_ticks is not None:
        env["CE_SEASON_TICKS"] = str(settings.season_ticks)
    group = ProcessGroup(log_dir)
    stack.callback(group.stop_all)
    group.spawn(
        "worker",
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "-l", "warning", "-n", "ce-backtest@%h",
         "-Q", ",".join(QUEUES)],
        env,
    )  # fmt: skip
    app = create_app(settings)
    stack.callback(app.close)
    return CeleryExecutor(app, fleet)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def summary_table(report: BacktestReport) -> Table:
    totals = report.totals()
    table = Table(title=f"backtest of {report.scenario} ({report.executor}, {report.ticks} ticks)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("campaigns", str(totals["campaigns"]))
    table.add_row("bids", f"{totals['bids']:,}")
    table.add_row("value won", f"{totals['value']:,.2f}")
    table.add_row("spend", f"{totals['spend']:,.2f}")
    table.add_row("budget use", pct(totals["budget_use"]))
    table.add_row("hindsight optimum value", f"{totals['optimum_value']:,.2f}")
    table.add_row("efficiency (value / optimum)", pct(totals["efficiency"]))
    table.add_row("efficiency, 10th percentile", pct(totals["efficiency_p10"]))
    table.add_row("waste share of spend", pct(totals["waste_share"]))
    table.add_row("bids throttled by their spend cap", pct(totals["throttled_share"]))
    for metric, mape in report.forecast_error.get("model", {}).items():
        naive = report.forecast_error.get("naive", {}).get(metric)
        table.add_row(f"forecast MAPE {metric} (naive)", f"{pct(mape)} ({pct(naive)})")
    if report.goals is not None:
        goals = report.goals.totals()
        table.add_row(
            "goals met / reachable in hindsight",
            f"{goals['reachable_met']}/{goals['reachable']} ({pct(goals['reachable_met_share'])})",
        )
        ratio = goals["cost_ratio_median"]
        table.add_row("met goals' spend / cheapest plan's, median", "n/a" if ratio is None else f"{ratio:.3f}")
        table.add_row(
            f"goals beyond the budget ({goals['unreachable']}): units / most buyable",
            pct(goals["unreachable_attainment"]),
        )
    table.add_row("run time", f"{totals['seconds']:.1f} s")
    return table
