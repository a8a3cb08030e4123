"""Entry point of the ``campaign-engine`` command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from common.errors import CampaignEngineError, InvalidInput, SettingsError
from common.logs import configure_logging
from common.market.generator import generate
from common.models import CampaignStatus, PlatformInfo
from common.settings import Settings
from common.settings import load_settings as settings_from_environment

if TYPE_CHECKING:
    from common.fleet.store import CampaignStore

app = typer.Typer(help="Real-time ad campaign optimisation engine.", no_args_is_help=True, add_completion=False)
scenario_app = typer.Typer(help="Scenario files (docs/market.md).", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
campaigns_app = typer.Typer(help="Campaigns in files, in the fleet's Redis (CE_REDIS_URL).", no_args_is_help=True)
app.add_typer(campaigns_app, name="campaigns")
platforms_app = typer.Typer(help="The platform registry, in the fleet's Redis (CE_REDIS_URL).", no_args_is_help=True)
app.add_typer(platforms_app, name="platforms")
feed_app = typer.Typer(help="The platforms' figures, in the fleet's Redis (CE_REDIS_URL).", no_args_is_help=True)
app.add_typer(feed_app, name="feed")
ledger_app = typer.Typer(help="The budget ledger (docs/ledger.md).", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    try:
        return settings_from_environment()
    except SettingsError as exc:
        raise fail(exc) from None


def fleet_store() -> CampaignStore:
    """The campaign store of the fleet's Redis, for commands that change it (CE_REDIS_URL required)."""
    from common.fleet.store import CampaignStore
    from common.redis_conn import connect

    settings = load_settings()
    if settings.redis_url is None:
        err.print("[red]error:[/] CE_REDIS_URL: set it to the fleet's Redis")
        raise typer.Exit(2)
    return CampaignStore(connect(settings.redis_url))


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
    from cli.up import demo, run_up

    settings = load_settings()
    configure_logging(settings)
    try:
        code = run_up(demo(settings), campaigns, duration, keep, console, concurrency)
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
def chaos(
    ticks: Annotated[int, typer.Option(min=100, max=1_000_000, help="Ticks the fleet runs under faults.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the faults' order and timing, and of the market.")] = 1,
    tick_seconds: Annotated[float, typer.Option(min=0.1, max=5.0, help="Tick length of the run.")] = 0.4,
    campaigns: Annotated[int, typer.Option(min=1, max=2_000, help="Demo campaigns.")] = 24,
    netns: Annotated[
        bool, typer.Option(help="Run one worker in a network namespace and cut it off (needs root).")
    ] = True,
    run_dir: Annotated[Path, typer.Option(help="Where Redis, the logs and the platforms' charges go.")] = Path(
        ".run/chaos"
    ),
    report: Annotated[Path | None, typer.Option(help="Where to write the report (JSON).")] = Path("chaos.json"),
) -> None:
    """Run a live fleet while killing, stopping and cutting off its parts; then check every campaign's books.

    Exits 1 when the ledger is not exact or a platform charge is missing from it.
    """
    from cli.chaos import ChaosFailed, Plan, run_chaos

    plan = Plan(ticks=ticks, seed=seed, tick_seconds=tick_seconds, campaigns=campaigns, netns=netns)
    if ticks < plan.minimum_ticks():
        raise _bad_option("--ticks", ValueError(f"must be at least {plan.minimum_ticks()} for every fault kind"))
    settings = load_settings()
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    try:
        found = run_chaos(plan, run_dir, report, console)
    except ChaosFailed as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except CampaignEngineError as exc:
        raise fail(exc) from None
    raise typer.Exit(0 if found["ok"] else 1)


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
    """Serve the HTTP API and the dashboard against CE_REDIS_URL; writes need CE_API_TOKEN."""
    from api.server import serve

    settings = load_settings()
    configure_logging(settings)
    if settings.redis_url is None:
        err.print("[red]error:[/] CE_REDIS_URL: set it to the fleet's Redis (`campaign-engine up` starts both)")
        raise typer.Exit(2)
    # A token made up here would be known to no client: every write would be refused.
    if "api_token" not in settings.model_fields_set or not settings.api_token.get_secret_value().strip():
        err.print(
            "[red]error:[/] CE_API_TOKEN: not set; writes need it, so give the API and its clients the same secret "
            "(such as `openssl rand -hex 24`); `campaign-engine up` makes one and prints it"
        )
        raise typer.Exit(2)
    serve(settings, host, port)


@app.command("platform-server")
def platform_server(
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (docs/market.md).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8100,
) -> None:
    """Serve the scenario's platforms over HTTP, clearing bids with the market model (CE_PLATFORM_ADAPTER=http).

    Each platform is at http://HOST:PORT/<platform>: register that as its endpoint.
    """
    from cli.platform_server import serve

    console.print(f"platforms of {scenario} at http://{host}:{port}/<platform>")
    serve(scenario, host, port)


@app.command()
def backtest(
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (docs/market.md).")],
    out: Annotated[Path, typer.Option(help="Decision log to write (JSON Lines).")],
    report: Annotated[Path | None, typer.Option(help="Also write a JSON report here.")] = None,
    executor: Annotated[str, typer.Option(help="inline (this process) or celery (real workers).")] = "inline",
    group: Annotated[int, typer.Option(min=1, max=100_000, help="Campaigns per evaluation task.")] = 50,
    aggressiveness: Annotated[float | None, typer.Option(min=0.0, max=3.0, help="Override CE_AGGRESSIVENESS.")] = None,
    season_ticks: Annotated[
        int | None,
        typer.Option(min=0, max=100_000, help="Ticks in one volume cycle; default learnt from the feed, 0 none."),
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
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (docs/market.md).")],
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


@app.command()
def score(
    scenario: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Scenario file (docs/market.md).")],
    decisions: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Decision log (JSON Lines).")],
    per_campaign: Annotated[bool, typer.Option("--per-campaign", help="Add every campaign's figures.")] = False,
) -> None:
    """Score a decision log against the hindsight optimum; exit 1 when a rule is broken or an outcome differs."""
    from common.backtest.score import dumps, score_files

    try:
        result = score_files(scenario, decisions)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.out(dumps(result.report(per_campaign)), highlight=False)
    raise typer.Exit(0 if result.clean else 1)


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
    campaigns: Annotated[int | None, typer.Option(min=0, max=1_000_000, help="Default 200, or the kind's.")] = None,
    platforms: Annotated[int, typer.Option(min=1, max=8)] = 4,
    ticks: Annotated[int, typer.Option(min=1, max=10_000_000)] = 720,
    seed: Annotated[int, typer.Option()] = 7,
    shock_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance of a shock per tick.")] = 0.004,
    late_flights: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of partial flights.")] = 0.3,
    name: Annotated[str | None, typer.Option(help="The scenario's name (default generated-SEED).")] = None,
    kind: Annotated[
        str | None, typer.Option(help="A named kind of market (`scenario kinds` lists them); sets all but --seed.")
    ] = None,
    goals: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of campaigns given a clicks or conversions goal.")
    ] = 0.0,
) -> None:
    """Write a reproducible synthetic scenario (docs/market.md format)."""
    from common.market.generator import with_goals
    from common.market.kinds import KINDS

    if kind is not None:
        if kind not in KINDS:
            err.print(f"[red]error:[/] --kind: one of {', '.join(KINDS)}, not {kind!r}")
            raise typer.Exit(2)
        scenario = KINDS[kind].scenario(seed, campaigns)
    else:
        scenario = generate(
            200 if campaigns is None else campaigns, platforms, ticks, seed,
            shock_rate=shock_rate, late_flights=late_flights, name=name,
        )  # fmt: skip
    if goals > 0:
        scenario = with_goals(scenario, goals, seed)
    scenario.save(out)
    console.print(
        f"wrote {out}: {len(scenario.platforms)} platforms, {len(scenario.campaigns)} campaigns, {scenario.ticks} ticks"
    )


@scenario_app.command("kinds")
def scenario_kinds(
    out_dir: Annotated[Path | None, typer.Option(help="Write every kind of the set here, as KIND-SEED.json.")] = None,
    set_name: Annotated[str, typer.Option("--set", help="tuning or held-out.")] = "held-out",
) -> None:
    """List the named kinds of market and the seeds of a set; with --out-dir, write the set's scenarios."""
    from common.market.kinds import KINDS, SETS

    if set_name not in SETS:
        err.print(f"[red]error:[/] --set: one of {', '.join(SETS)}, not {set_name!r}")
        raise typer.Exit(2)
    for kind in KINDS.values():
        for seed in SETS[set_name]:
            line = f"{kind.name:8s} seed {seed:5d}  {kind.description}"
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"{kind.name}-{seed}.json"
                kind.scenario(seed).save(path)
                line += f"  -> {path}"
            console.print(line)


@platforms_app.command("add")
def platforms_add(
    platform_id: Annotated[str, typer.Argument(metavar="ID", help="The platform's id.")],
    price_sigma: Annotated[
        float | None, typer.Option(help="Spread of the market price (log-normal sigma); default 0.5.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="Base URL of its bidding API, for CE_PLATFORM_ADAPTER=http.")
    ] = None,
) -> None:
    """Register a platform, or replace what is known of it (price spread, endpoint)."""
    fields: dict[str, object] = {"id": platform_id}
    if price_sigma is not None:
        fields["price_sigma"] = price_sigma
    if endpoint is not None:
        fields["endpoint"] = endpoint
    try:
        platform = PlatformInfo.parse(fields)
        new = fleet_store().add_platform(platform)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"{'registered' if new else 'replaced'} {platform.id} (price_sigma {platform.price_sigma:g})")


@platforms_app.command("list")
def platforms_list() -> None:
    """The registered platforms, one a line: id, price spread and endpoint (when it has one)."""
    try:
        found = fleet_store().platforms()
    except CampaignEngineError as exc:
        raise fail(exc) from None
    for platform in found.values():
        typer.echo(f"{platform.id}\t{platform.price_sigma:g}" + (f"\t{platform.endpoint}" if platform.endpoint else ""))


@platforms_app.command("remove")
def platforms_remove(platform_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Forget a platform; refused while an active or paused campaign lists it."""
    try:
        fleet_store().remove_platform(platform_id)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"removed {platform_id}")


@feed_app.command("post")
def feed_post(
    file: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False, help="CSV or JSON Lines.")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (JSON Lines); default: from the file's extension.")
    ] = None,
) -> None:
    """Publish the figures of FILE (tick, platform, cpc, cvr, volume a row), all or none: each refused row
    is named with its line and reason. A (platform, tick) published before keeps its first figures."""
    from cli.campaign_files import file_format as format_of
    from cli.feed_files import post_feed

    try:
        fmt = format_of(file, file_format)
        store = fleet_store()
        written, kept = post_feed(store, file, fmt, load_settings().tick_seconds)
    except InvalidInput as exc:
        raise _refused_rows(exc, file, "published") from None
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"published {written} figure(s) from {file}" + (f"; {kept} published before, kept" if kept else ""))


def _refused_rows(exc: InvalidInput, file: Path, done: str) -> typer.Exit:
    """Print each refused row of FILE with its reason; the exit to raise (a file-wide error: ``fail``)."""
    if not any(field.startswith("line ") for field, _ in exc.errors):
        return fail(exc)
    for field, reason in exc.errors:
        err.print(f"{escape(field)}: {escape(reason)}", highlight=False)
    rows = len({field.split(":")[0] for field, _ in exc.errors})
    err.print(f"[red]error:[/] {rows} row(s) of {escape(str(file))} refused; nothing was {done}")
    return typer.Exit(2)


FormatOption = Annotated[
    str | None, typer.Option("--format", help="csv or jsonl (JSON Lines); default: from the file's extension.")
]


@campaigns_app.command("import")
def campaigns_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False, help="CSV or JSON Lines.")],
    file_format: FormatOption = None,
) -> None:
    """Create every campaign of FILE, or none: each refused row is named with its line and reason."""
    from cli.campaign_files import file_format as format_of
    from cli.campaign_files import import_campaigns
    from common.fleet.clock import Clock

    try:
        fmt = format_of(file, file_format)
        store = fleet_store()
        created = import_campaigns(store, Clock(store.r, load_settings().tick_seconds), file, fmt)
    except InvalidInput as exc:
        raise _refused_rows(exc, file, "imported") from None
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"imported {len(created)} campaign(s) from {file}")


@campaigns_app.command("export")
def campaigns_export(
    file: Annotated[Path, typer.Argument(metavar="FILE", dir_okay=False, help="Where to write them.")],
    file_format: FormatOption = None,
    status: Annotated[CampaignStatus | None, typer.Option(help="Only campaigns of this status.")] = None,
    ticks: Annotated[
        bool, typer.Option("--ticks", help="Flights in ticks even when the fleet's clock gives date-times.")
    ] = False,
) -> None:
    """Write the campaigns to FILE in the format `campaigns import` reads."""
    from cli.campaign_files import export_campaigns
    from cli.campaign_files import file_format as format_of
    from common.fleet.clock import Clock

    try:
        fmt = format_of(file, file_format)
        store = fleet_store()
        count = export_campaigns(store, Clock(store.r, load_settings().tick_seconds), file, fmt, status, ticks)
    except CampaignEngineError as exc:
        raise fail(exc) from None
    console.print(f"exported {count} campaign(s) to {file}")


if __name__ == "__main__":
    app()
