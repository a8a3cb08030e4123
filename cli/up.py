"""``campaign-engine up``: the whole fleet on one machine, for a demo or development.

Starts (unless ``CE_REDIS_URL`` points at one) a private Redis with AOF under the run directory and,
unless ``CE_BROKER_URL`` is set, a second one without persistence for Celery's broker; then a Celery
worker, Celery beat, Flower and the HTTP API as child processes; loads a demo market and campaigns,
and prints one line per tick until Ctrl-C or ``--duration``.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from rich.console import Console

from cli.processes import ProcessGroup
from cli.redis_server import FsyncPolicy, RedisServer
from common import keys
from common.errors import Conflict, InvalidInput, StoreUnavailable
from common.fleet import capacity, eviction
from common.fleet.fleet import DEFAULT_MARKET_TICKS
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.market.generator import generate
from common.market.scenario import Scenario
from common.redis_conn import Client, connect, translated_errors, without_retries
from common.settings import Settings

# The ledger's money must survive a crash of the embedded Redis: see docs/ledger.md.
EMBEDDED_FSYNC: FsyncPolicy = "always"
# The tick follower's wait for Redis: a read times out after FOLLOW_TIMEOUT s; retries back off from
# the first pause to the second.
FOLLOW_TIMEOUT = 2.0
FOLLOW_RETRY = (0.2, 5.0)


def embedded_broker(directory: Path, password: str | None = None) -> RedisServer:
    """The broker beside an embedded state Redis: a second server, with no append-only file.

    The broker holds no money. A message it loses in a crash is an evaluation that would have expired
    at its tick's deadline anyway (the sweeper closes whatever reservation it left), a tick that beat
    fires again on the next boundary, or a sweep. Sharing the state's Redis made every publish wait
    for the fsync that ``appendfsync always`` does for the ledger: Celery's no-op rate was about 490
    tasks a second on 2 cores, and fanning out 1,000 tasks took most of a tick.
    """
    return RedisServer(directory, appendonly=False, password=password)


class _Stop(Exception):
    """Raised from the SIGTERM handler to unwind like Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def write_demo_market(path: Path, seed: int, ticks: int = DEFAULT_MARKET_TICKS) -> Path:
    """Generate the demo market (four platforms, no campaigns) and save it at ``path``."""
    generate(campaigns=0, platforms=4, ticks=ticks, seed=seed).save(path)
    return path


def load_demo(client: Client, market: Scenario, campaigns: int, seed: int) -> tuple[list[str], int]:
    """Register the market's platforms and create ``campaigns`` demo campaigns; returns (ids created, kept).

    A campaign whose id exists is kept as it is (from an earlier run with --keep). Any other refusal
    stops the run naming the campaign, the field and the reason: a scenario whose platforms the demo
    campaigns cannot use would otherwise run with no campaign at all.
    """
    store = CampaignStore(client)
    store.register_platforms(series.info for series in market.platforms.values())
    demo = generate(
        campaigns=campaigns, platforms=len(market.platforms), ticks=market.ticks, seed=seed, late_flights=0.0
    )
    created: list[str] = []
    kept = 0
    for spec in demo.campaigns:
        try:
            store.create(spec)
        except Conflict:
            kept += 1
        except InvalidInput as exc:
            raise InvalidInput([(f"campaigns.{spec.id}.{field}", reason) for field, reason in exc.errors]) from exc
        else:
            created.append(spec.id)
    return created, kept


def simulated(settings: Settings) -> Settings:
    """The settings of a run on the simulated market (a backtest, a benchmark): its feed and its platforms."""
    return settings.model_copy(update={"feed": "simulated", "platform_adapter": "simulated"})


def demo(settings: Settings) -> Settings:
    """``up``'s settings: the simulated market's feed unless CE_FEED says otherwise (the demo needs no data)."""
    return settings if "feed" in settings.model_fields_set else settings.model_copy(update={"feed": "simulated"})


def child_env(settings: Settings, redis_url: str, scenario: Path, broker_url: str | None = None) -> dict[str, str]:
    """The fleet's environment; ``broker_url`` (an embedded broker) overrides ``CE_BROKER_URL``."""
    env = dict(os.environ)
    env.update(
        CE_REDIS_URL=redis_url,
        CE_SCENARIO=str(scenario.resolve()),
        CE_RUN_DIR=str(settings.run_dir.resolve()),
        CE_FLOWER_USER=settings.flower_user,
        CE_FLOWER_PASSWORD=settings.flower_password.get_secret_value(),
        CE_API_TOKEN=settings.api_token.get_secret_value(),
        CE_FEED=settings.feed,
        CE_PLATFORM_ADAPTER=settings.platform_adapter,
        PYTHONUNBUFFERED="1",
    )
    broker_url = broker_url or settings.broker_url
    if broker_url:
        env["CE_BROKER_URL"] = broker_url
    return env


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", *args]


def worker_argv(name: str, concurrency: int, level: str = "info") -> list[str]:
    """A fleet worker's command line: ``concurrency`` pool processes consuming every queue of the fleet."""
    from worker.app import QUEUES  # importing the worker package builds its Celery app: only when needed

    return celery_argv("-A", "worker", "worker", "-l", level, "-n", name, "-Q", ",".join(QUEUES),
                       "-c", str(concurrency))  # fmt: skip


def flower_argv(port: int, address: str = "127.0.0.1") -> list[str]:
    """Flower's command line. Its credentials are not on it (the process list shows every command line):
    Flower reads them from ``FLOWER_BASIC_AUTH`` in its environment (``flower_env``)."""
    return celery_argv("-A", "worker", "flower", f"--address={address}", f"--port={port}", "--persistent=False")


def flower_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """``env`` with Flower's basic-auth credentials added, for the Flower process only."""
    return {**env, "FLOWER_BASIC_AUTH": f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"}


def tick_line(entry: TickStats) -> str:
    """One tick as the operator reads it; ``pace`` is spend against what the pacing planned.

    It ends with ``capacity ok`` or ``over capacity 62%`` (the share of due campaigns evaluated), as
    ``common.fleet.capacity`` judges the entry.
    """
    late = entry.late + entry.dropped
    spend = entry.spend
    pace = f"{spend / entry.planned:>5.0%}" if entry.planned > 0 else "    -"
    return (
        f"tick {entry.tick:>6}  evaluated {entry.evaluated:>5}/{entry.fanned:<5} "
        f"bids {entry.bids:>5}  spend {spend:>9.2f}  pace {pace}  "
        f"value {entry.value:>10.2f}  late/dropped {late:>3}  missed {entry.missed:>3}  "
        f"worst {entry.worst_latency_ms:>7.1f} ms  {capacity.describe(entry)}"
    )


def default_concurrency() -> int:
    """Worker processes for the one-machine fleet.

    An evaluation spends most of its few milliseconds waiting on Redis round trips, so a pool of
    a few processes per core keeps the cores busy; two per core left 10-25% of a 200-campaign tick
    unevaluated on a 2-core machine, four per core evaluated all of it within the tick.
    """
    return 4 * max(1, os.cpu_count() or 1)


def demo_group_size(settings: Settings, campaigns: int) -> int:
    """Campaigns per evaluation task for the one-machine fleet, unless CE_CAMPAIGNS_PER_TASK says.

    One task per campaign costs a few milliseconds of Celery and Redis overhead each; on a small
    machine running Redis, worker, beat, Flower and the API together, about 40 tasks per core and
    tick leave the tick comfortable headroom (200 campaigns on 2 cores: 3 per task).
    """
    if "campaigns_per_task" in settings.model_fields_set:
        return settings.campaigns_per_task
    return max(1, math.ceil(campaigns / (40 * max(1, os.cpu_count() or 1))))


def run_up(
    settings: Settings,
    campaigns: int,
    duration: float | None,
    keep: bool,
    console: Console,
    concurrency: int | None = None,
) -> int:
    concurrency = concurrency or default_concurrency()
    group = demo_group_size(settings, campaigns)
    run_dir = settings.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    children = ProcessGroup(run_dir / "logs")
    server: RedisServer | None = None
    broker: RedisServer | None = None
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        # The embedded servers listen on loopback, where every user of the machine could reach them: they
        # require a password too, made up for this run and handed to the children in their environment.
        password = secrets.token_urlsafe(18)
        if settings.redis_url is None:
            server = RedisServer(
                run_dir / "redis", appendonly=True, appendfsync=EMBEDDED_FSYNC, password=password
            ).start()
            redis_url = server.url
            console.print(f"[bold]redis[/]   embedded {server.binary} on {server.address} (AOF in {server.directory})")
        else:
            redis_url = settings.redis_url
            console.print(f"[bold]redis[/]   {redis_url.split('@')[-1]}")
        if server is not None and settings.broker_url is None:
            broker = embedded_broker(run_dir / "broker", password).start()
            console.print(f"[bold]broker[/]  embedded {broker.binary} on {broker.address} (no AOF: it holds no money)")
        elif settings.broker_url is not None:
            console.print(f"[bold]broker[/]  {settings.broker_url.split('@')[-1]}")
        client = connect(redis_url)
        eviction.check(client)  # before any worker starts: the fleet refuses a store that may evict keys
        if server is not None and not keep:
            client.flushall()
        scenario_path = settings.scenario or run_dir / "demo-market.json"
        if settings.scenario is None:
            write_demo_market(scenario_path, settings.market_seed)
        market = Scenario.load(scenario_path)
        created, kept = load_demo(client, market, campaigns, settings.market_seed + 1)
        console.print(
            f"[bold]demo[/]    {len(market.platforms)} platforms, {len(created)} campaigns created"
            + (f", {kept} kept from the last run" if kept else "")
            + f" ({client.scard(keys.ACTIVE)} active)"
        )
        env = child_env(settings, redis_url, scenario_path, broker.url if broker else None)
        env["CE_CAMPAIGNS_PER_TASK"] = str(group)
        console.print(
            f"[bold]fleet[/]   {concurrency} worker processes, {group} campaign(s) per evaluation task "
            "(CE_CAMPAIGNS_PER_TASK)"
        )
        level = settings.log_level.lower()
        children.spawn("worker", worker_argv(f"ce-worker-{os.getpid()}@%h", concurrency, level), env)
        children.spawn("flower", flower_argv(settings.flower_port), flower_env(settings, env))
        console.print(
            f"[bold]flower[/]  http://127.0.0.1:{settings.flower_port}  (user {settings.flower_user}, "
            f"password {settings.flower_password.get_secret_value()})"
        )
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        children.spawn(
            "api",
            [sys.executable, "-m", "cli.main", "api", f"--host={settings.api_host}", f"--port={settings.api_port}"],
            env,
        )
        console.print(
            f"[bold]api[/]     {api_url}/ dashboard, {api_url}/docs  (token for writes: "
            f"{settings.api_token.get_secret_value()})"
        )
        console.print(f"[bold]logs[/]    {children.log_dir}/  -  Ctrl-C stops everything")
        # Beat starts once a worker answers, so that no tick is fanned out to nobody.
        ready = settings.model_copy(update={"redis_url": redis_url, "broker_url": env.get("CE_BROKER_URL")})
        if not _wait_for_worker(ready, children):
            console.print(f"[red]the worker did not come up;[/] see {children.log_dir / 'worker.log'}")
            return 1
        children.spawn("beat", celery_argv("-A", "beat", "beat", "-l", level), env)
        return _follow_ticks(client, children, duration, console)
    except (KeyboardInterrupt, _Stop):
        console.print("stopping...")
        return 0
    finally:
        children.stop_all()
        for embedded in (broker, server):
            if embedded is not None:
                embedded.stop()
        signal.signal(signal.SIGTERM, previous)
        stopped = " and redis" + (" (state and broker)" if broker else "") if server else ""
        console.print("stopped: worker, beat, flower, api" + stopped)


def _wait_for_worker(settings: Settings, children: ProcessGroup, timeout: float = 90.0) -> bool:
    from worker.app import create_app

    app = create_app(settings)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not children.dead():
            if app.control.ping(timeout=0.5):
                return True
        return False
    finally:
        app.close()


def _follow_ticks(client: Client, children: ProcessGroup, duration: float | None, console: Console) -> int:
    """Print each tick's summary as it is written; return when the duration is up or a child dies.

    While Redis cannot be reached (restarted, paused, failing over) it says so once, tries again with
    a growing pause (``FOLLOW_RETRY``), and says when Redis is back: the fleet's processes reconnect on
    their own, and an outage is no reason to stop them.
    """
    end = None if duration is None else time.monotonic() + duration
    # Its own client: a short time-out and no retries, so that a paused Redis is noticed within seconds.
    follower = without_retries(client, socket_timeout=FOLLOW_TIMEOUT)
    try:
        return _follow(follower, children, end, console)
    finally:
        follower.close()


def _follow(follower: Client, children: ProcessGroup, end: float | None, console: Console) -> int:
    last_id = "$"
    down_since: float | None = None
    pause = FOLLOW_RETRY[0]
    while end is None or time.monotonic() < end:
        dead = children.dead()
        if dead:
            names = ", ".join(f"{c.name} (see {c.log_path})" for c in dead)
            console.print(f"[red]stopped unexpectedly:[/] {names}")
            return 1
        block_ms = 500 if end is None else max(1, min(500, int((end - time.monotonic()) * 1000)))
        try:
            with translated_errors("follow the ticks"):
                replies: list[tuple[str, list[tuple[str, dict[str, str]]]]] = follower.xread(  # type: ignore[assignment]
                    {keys.TICK_STATS: last_id}, block=block_ms
                )
        except StoreUnavailable as exc:
            if down_since is None:
                down_since = time.monotonic()
                console.print(f"[yellow]redis unreachable[/] ({exc.__cause__}); retrying until it is back")
            time.sleep(pause if end is None else max(0.0, min(pause, end - time.monotonic())))
            pause = min(pause * 2, FOLLOW_RETRY[1])
            continue
        if down_since is not None:
            console.print(f"[green]redis reachable again[/] after {time.monotonic() - down_since:.0f} s")
            down_since, pause = None, FOLLOW_RETRY[0]
        for _stream, entries in replies or []:
            for entry_id, entry in entries:
                last_id = entry_id
                console.print(tick_line(TickStats.from_fields(entry)), highlight=False)
    return 0
