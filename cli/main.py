"""Entry point of the ``campaign-engine`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from common.errors import CampaignEngineError, InvalidInput, SettingsError
from common.logs import configure_logging
from common.market.generator import generate
from common.settings import Settings
from common.settings import load_settings as settings_from_environment

app = typer.Typer(help="Real-time ad campaign optimisation engine.", no_args_is_help=True, add_completion=False)
scenario_app = typer.Typer(help="Scenario files (MARKET.md).", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
ledger_app = typer.Typer(help="The budget ledger (docs/ledger.md).", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    try:
        return settings_from_environment()
    except SettingsError as exc:
        raise fail(exc) from None


def fail(exc: CampaignEngineError) -> typer.Exit:
    """One line saying what went wrong; exit 2 for input or settings to correct, 1 for a failure."""
    err.print(f"[red]error:[/] {escape(str(exc))}")
    return typer.Exit(2 if isinstance(exc, InvalidInput | SettingsError) else 1)


@app.command()
def up(
    campaigns: Annotated[int, typer.Option(min=0, max=100_000, help="Demo campaigns to load.")] = 200,
    duration: Annotated[float | None, typer.Option(min=1, help="Stop after this many seconds.")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the embedded Redis's state from the last run.")] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="Worker processes (default: four per core).")
    ] = None,
) -> None:
    """Run the whole fleet here: Redis (embedded unless CE_REDIS_URL), worker, beat and Flower."""
    from cli.up import run_up

    settings = load_settings()
    configure_logging(settings)
    try:
        code = run_up(settings, campaigns, duration, keep, console, concurrency)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    raise typer.Exit(code)


@app.command()
def bench(
    campaigns: Annotated[str, typer.Option(help="Campaign counts to run, comma-separated.")] = "500,1000,2000,4000",
    ticks: Annotated[int, typer.Option(help="Ticks per count; the first two are warm-up and not measured.")] = 8,
    campaigns_per_task: Annotated[
        int | None, typer.Option(help="Campaigns per evaluation task (default: as `up` chooses for each count).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (default: four per core).")] = None,
    noop_tasks: Annotated[int, typer.Option(help="No-op tasks sent for the Celery ceiling.")] = 5000,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Campaign state on an embedded 3-node Redis Cluster, the broker on a separate embedded Redis.",
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where to write the figures (JSON).")] = Path("bench.json"),
    plot: Annotated[Path | None, typer.Option(help="Where to write the plot (PNG).")] = Path("bench.png"),
) -> None:
    """Run the real fleet (embedded Redis, worker, beat) at each campaign count and measure it."""
    from cli.bench import Plan, check_ticks, parse_counts, run_bench
    from cli.bench.run import BenchFailed
    from cli.up import default_concurrency

    try:
        counts = parse_counts(campaigns)
    except ValueError as exc:
        raise _bad_option("--campaigns", exc) from None
    try:
        check_ticks(ticks)
    except ValueError as exc:
        raise _bad_option("--ticks", exc) from None
    for name, value, top in (
        ("--campaigns-per-task", campaigns_per_task, 10_000), ("--concurrency", concurrency, 256),
        ("--noop-tasks", noop_tasks, 1_000_000),
    ):  # fmt: skip
        if value is not None and not 1 <= value <= top:
            raise _bad_option(name, ValueError(f"must be between 1 and {top:,}, got {value}"))
    settings = load_settings()
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    plan = Plan(counts, ticks, campaigns_per_task, concurrency or default_concurrency(), noop_tasks, cluster=cluster)
    try:
        run_bench(settings, plan, out, plot, console)
    except BenchFailed as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except CampaignEngineError as exc:
        raise fail(exc) from None


@app.command()
def memory(
    campaigns: Annotated[int, typer.Option(min=1, max=100_000, help="Campaigns, each flying the whole run.")] = 50,
    ticks: Annotated[int, typer.Option(min=2, max=10_000_000, help="Ticks to run (43,200: a day of 2 s).")] = 43_200,
    at: Annotated[str, typer.Option(help="Tick counts to measure at, comma-separated; the first is the base.")] = (
        "1000,5000,10000,20000,30000"
    ),
    limit: Annotated[float, typer.Option(help="Exit 1 when the last figure exceeds the base times this.")] = 1.25,
) -> None:
    """Run a long backtest on a private Redis and show that its memory stays bounded."""
    from cli.memory import Sample, measure

    try:
        points = sorted({int(x) for x in at.split(",") if x.strip()})
    except ValueError:
        raise _bad_option("--at", ValueError(f"must be tick counts separated by commas, got {at!r}")) from None
    if not points or points[0] < 1 or points[-1] > ticks:
        raise _bad_option("--at", ValueError(f"each tick count must be between 1 and --ticks ({ticks})"))
    settings = load_settings()
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))

    def show(s: Sample) -> None:
        parts = ", ".join(f"{name} {size / 1e6:.2f}" for name, size in s.parts.items())
        console.print(
            f"tick {s.tick:>9,}  memory {s.used_memory / 1e6:8.2f} MB  keys {s.keys:>9,}  {s.seconds:8.0f} s"
            f"  ({parts} MB)",
            highlight=False,
        )

    samples = measure(settings, campaigns, ticks, points, on_sample=show)
    ratio = samples[-1].used_memory / samples[0].used_memory
    console.print(f"memory at tick {samples[-1].tick:,} is {ratio:.3f} times that at tick {samples[0].tick:,}")
    raise typer.Exit(0 if ratio <= limit else 1)


def _bad_option(name: str, exc: ValueError) -> typer.Exit:
    err.print(f"[red]error:[/] {name}: {exc}")
    return typer.Exit(2)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default CE_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default CE_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API and the dashboard against CE_REDIS_URL."""
    from api.server import serve

    settings = load_settings()
    configure_logging(settings)
    if settings.redis_url is None:
        err.print("[red]error:[/] CE_REDIS_URL: set it to the fleet's Redis (`campaign-engine up` starts both)")
        raise typer.Exit(2)
    serve(settings, host, port)


@app.command()
def backtest(
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (MARKET.md).")],
    out: Annotated[Path, typer.Option(help="Decision log to write (JSON Lines).")],
    report: Annotated[Path | None, typer.Option(help="Also write a JSON report here.")] = None,
    executor: Annotated[str, typer.Option(help="inline (this process) or celery (real workers).")] = "inline",
    group: Annotated[int, typer.Option(min=1, max=100_000, help="Campaigns per evaluation task.")] = 50,
    aggressiveness: Annotated[float | None, typer.Option(min=0.0, max=3.0, help="Override CE_AGGRESSIVENESS.")] = None,
    season_ticks: Annotated[
        int | None,
        typer.Option(min=0, max=100_000, help="Ticks in one volume cycle; default the scenario's length, 0 none."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a scenario through the fleet's path tick by tick and write its decision log."""
    from cli.backtest import run_backtest, summary_table

    if executor not in ("inline", "celery"):
        err.print(f"[red]error:[/] --executor: must be inline or celery, not {executor!r}")
        raise typer.Exit(2)
    settings = load_settings()
    updates: dict[str, object] = {"campaigns_per_task": group}
    if aggressiveness is not None:
        updates["aggressiveness"] = aggressiveness
    if season_ticks is not None:
        updates["season_ticks"] = season_ticks
    settings = settings.model_copy(update=updates)
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    try:
        result = run_backtest(settings, scenario, out, report, executor, console, show_progress=progress)  # type: ignore[arg-type]
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(summary_table(result))
    console.print(f"decision log: {out}" + (f", report: {report}" if report else ""))


@app.command()
def pareto(
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (MARKET.md).")],
    out: Annotated[Path, typer.Option(help="Where to write the plot (PNG).")] = Path("frontier.png"),
    levels: Annotated[str, typer.Option(help="Comma-separated aggressiveness settings to backtest.")] = "",
    group: Annotated[int, typer.Option(min=1, max=100_000, help="Campaigns per evaluation task.")] = 50,
) -> None:
    """Sweep aggressiveness, backtest each setting, and plot value against spend and waste."""
    from cli.backtest import pct
    from cli.pareto import DEFAULT_SETTINGS, plot, sweep
    from common.backtest.pareto import ParetoPoint, frontier

    try:
        chosen = tuple(float(x) for x in levels.split(",")) if levels.strip() else DEFAULT_SETTINGS
    except ValueError:
        err.print(f"[red]error:[/] --levels: must be numbers separated by commas, got {levels!r}")
        raise typer.Exit(2) from None
    if any(not 0.0 <= x <= 3.0 for x in chosen):
        err.print("[red]error:[/] --levels: each setting must be between 0 and 3")
        raise typer.Exit(2)
    settings = load_settings().model_copy(update={"campaigns_per_task": group})
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    try:
        reports = sweep(settings, scenario, chosen, console)
        plot(reports, out)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    points = [ParetoPoint.of(r) for r in reports]
    on_front = {p.aggressiveness for p in frontier(points)}
    for p in points:
        mark = "frontier" if p.aggressiveness in on_front else ""
        console.print(
            f"aggressiveness {p.aggressiveness:>5g}  value {p.value:>12,.2f}  spend {p.spend:>12,.2f}  "
            f"waste {p.waste:>10,.2f}  efficiency {pct(p.efficiency):>7}  {mark}"
        )
    console.print(f"plot: {out}")


@ledger_app.command("audit")
def ledger_audit(
    campaign: Annotated[
        list[str] | None, typer.Option("--campaign", "-c", help="Audit only this campaign (repeatable).")
    ] = None,
) -> None:
    """Check every ledger invariant of every campaign in CE_REDIS_URL; exit 1 when any is broken."""
    from common import keys
    from common.ledger import audit
    from common.redis_conn import connect, translated_errors

    settings = load_settings()
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    try:
        client = connect(settings.state_url)
        with translated_errors("list campaigns"):
            members: set[str] = client.smembers(keys.CAMPAIGNS)  # type: ignore[assignment]
            ids = sorted(campaign) if campaign else sorted(members)
        broken = 0
        for report in audit.audit_all(client, ids):
            for problem in report.problems:
                console.print(problem, highlight=False, markup=False)
            broken += not report.ok
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"{len(ids)} campaigns audited, {broken} with broken invariants")
    raise typer.Exit(1 if broken else 0)


@scenario_app.command("generate")
def scenario_generate(
    out: Annotated[Path, typer.Option(help="Where to write the scenario JSON.")],
    campaigns: Annotated[int, typer.Option(min=0, max=1_000_000)] = 200,
    platforms: Annotated[int, typer.Option(min=1, max=8)] = 4,
    ticks: Annotated[int, typer.Option(min=1, max=10_000_000)] = 720,
    seed: Annotated[int, typer.Option()] = 7,
    shock_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance of a shock per tick.")] = 0.004,
    late_flights: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of partial flights.")] = 0.3,
) -> None:
    """Write a reproducible synthetic scenario (MARKET.md format)."""
    scenario = generate(campaigns, platforms, ticks, seed, shock_rate=shock_rate, late_flights=late_flights)
    scenario.save(out)
    console.print(f"wrote {out}: {len(scenario.platforms)} platforms, {campaigns} campaigns, {ticks} ticks")


if __name__ == "__main__":
    app()
