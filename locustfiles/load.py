"""``make load``: ``steady.py`` against a fleet that evaluates many campaigns, and what both did.

    python -m locustfiles.load --campaigns 1000 --duration 60 [--users 14 --ops-rate 1 --csv PREFIX]

Starts ``campaign-engine up --campaigns N`` in the background on ports of its own (a private Redis
unless ``CE_REDIS_URL`` names one), waits until it has ticked past its first two ticks, runs Locust
headless for ``--duration`` seconds with its statistics in CSV files (``--csv``), stops the fleet, and
prints a summary: requests, failures and latency per request type, and the fleet's tick lines
during the load (from ``ce:tick:stats``). The summary is also written beside the CSV files
(``PREFIX_summary.md``). Exits 1 if Locust failed or a request failed.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cli.processes import Child, ProcessGroup
from cli.redis_server import RedisServer, free_port
from cli.up import EMBEDDED_FSYNC, tick_line
from common import keys
from common.fleet import stats
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.redis_conn import Client, connect
from common.settings import load_settings

LOCUSTFILE = Path(__file__).resolve().parent / "steady.py"
# Ticks left out before the load starts: the first two warm up (forecasts, imports, pools).
WARMUP_TICKS = 2
LOAD_PREFIX = "load-"  # steady.LOAD_PREFIX; steady.py is imported only by Locust (it patches with gevent)


@dataclass(frozen=True)
class RequestStats:
    """One row of Locust's ``_stats.csv``: a request type, or all of them (``Aggregated``)."""

    method: str
    name: str
    requests: int
    failures: int
    rate: float
    p50: int
    p95: int
    p99: int
    max: int

    @classmethod
    def read(cls, path: Path) -> list[RequestStats]:
        with path.open(newline="") as f:
            return [
                cls(row["Type"], row["Name"], int(row["Request Count"]), int(row["Failure Count"]),
                    float(row["Requests/s"]), _ms(row["50%"]), _ms(row["95%"]), _ms(row["99%"]),
                    _ms(row["Max Response Time"]))
                for row in csv.DictReader(f)
            ]  # fmt: skip


def _ms(value: str) -> int:
    return 0 if value in ("", "N/A") else round(float(value))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make load", description=__doc__.split("\n\n")[0])
    p.add_argument("--campaigns", type=int, default=1000, help="demo campaigns the fleet evaluates (up --campaigns)")
    p.add_argument("--duration", type=int, default=60, help="seconds of load")
    p.add_argument("--users", type=int, default=14, help="Locust users: one Prometheus, the rest 5:2:1 ad-ops, "
                   "connectors, dashboards")  # fmt: skip
    p.add_argument("--spawn-rate", type=float, default=7.0, help="users started per second")
    p.add_argument("--ops-rate", type=float, default=1.0, help="actions per second of each ad-ops user")
    p.add_argument("--csv", type=Path, default=Path(".run/load/locust"), help="prefix of Locust's CSV files")
    p.add_argument("--run-dir", type=Path, default=Path(".run/load"), help="the fleet's run directory and logs")
    p.add_argument("--api-port", type=int, default=0, help="the API's port (default: a free one)")
    p.add_argument("--flower-port", type=int, default=0, help="Flower's port (default: a free one)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds for the fleet to load and tick")
    return p.parse_args(argv)


def campaign_engine() -> list[str]:
    """The ``campaign-engine`` command beside this interpreter (or the same entry point through it)."""
    script = Path(sys.executable).parent / "campaign-engine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def wait_for_fleet(client: Client, api: str, up: Child, timeout: float) -> None:
    """Until the API answers and the fleet has summarised more than its warm-up ticks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not up.alive:
            raise SystemExit(f"campaign-engine up stopped; see {up.log_path}:\n{up.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api}/health/live", timeout=2) as response:
                live = response.status == 200
        except (urllib.error.URLError, OSError):
            live = False
        if live and client.xlen(keys.TICK_STATS) > WARMUP_TICKS:
            return
        time.sleep(0.5)
    raise SystemExit(f"the fleet did not tick within {timeout:.0f} s; see {up.log_path}")


def wait_for_summary(client: Client, tick: int, timeout: float) -> None:
    """Until tick ``tick`` is summarised (when the next tick begins)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = client.xrevrange(keys.TICK_STATS, count=1)
        if newest and stats.parse(newest)[0].tick >= tick:  # type: ignore[arg-type]
            return
        time.sleep(0.2)


def ticks_between(client: Client, first: int, last: int) -> list[TickStats]:
    return [e for e in stats.parse(client.xrange(keys.TICK_STATS)) if first <= e.tick <= last]  # type: ignore[arg-type]


def complete(entry: TickStats) -> bool:
    """Every campaign fanned out was evaluated, or skipped because it was paused or deleted meanwhile, in
    time."""
    return entry.evaluated + entry.skipped == entry.fanned and entry.late + entry.dropped + entry.missed == 0


def summary(campaigns: int, seconds: float, requests: list[RequestStats], ticks: list[TickStats], left: int) -> str:
    rows = sorted((r for r in requests if r.name != "Aggregated"), key=lambda r: (r.name, r.method))
    rows += [r for r in requests if r.name == "Aggregated"]
    lines = [
        f"{campaigns} demo campaigns, {seconds:.0f} s of load; API response times in ms",
        "",
        "| request | requests | failures | req/s | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "all" if r.name == "Aggregated" else f"{r.method} {r.name}"
        lines.append(f"| {name} | {r.requests} | {r.failures} | {r.rate:.1f} | {r.p50} | {r.p95} | {r.p99} | {r.max} |")
    lines += ["", "```", *(tick_line(e) for e in ticks), "```", ""]
    if ticks:
        whole = sum(complete(e) for e in ticks)
        evaluated = [e.evaluated for e in ticks]
        lines.append(
            f"{len(ticks)} ticks during the load, {whole} complete; evaluated per tick {min(evaluated)}-"
            f"{max(evaluated)} (mean {sum(evaluated) / len(ticks):.0f}), skipped {sum(e.skipped for e in ticks)}, "
            f"late/dropped {sum(e.late + e.dropped for e in ticks)}, missed {sum(e.missed for e in ticks)}, "
            f"worst {max(e.worst_latency_ms for e in ticks):.0f} ms"
        )
    else:
        lines.append("no tick summarised during the load")
    lines.append(f"load campaigns left after the run: {left}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    run_dir = args.run_dir.resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir / "logs", ignore_errors=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(18)
    api_port, flower_port = args.api_port or free_port(), args.flower_port or free_port()
    api = f"http://127.0.0.1:{api_port}"
    server = None
    if settings.redis_url is None:
        # A private Redis as `up` would start it, owned here so that the ticks can be read after the fleet stops.
        shutil.rmtree(run_dir / "redis", ignore_errors=True)
        server = RedisServer(run_dir / "redis", appendonly=True, appendfsync=EMBEDDED_FSYNC).start()
        redis_url = server.url
    else:
        redis_url = settings.redis_url
    client = connect(redis_url)
    env = {
        **os.environ,
        "CE_REDIS_URL": redis_url, "CE_RUN_DIR": str(run_dir), "CE_API_TOKEN": token,
        "CE_API_PORT": str(api_port), "CE_FLOWER_PORT": str(flower_port), "PYTHONUNBUFFERED": "1",
        # The summary reads every tick of the run at its end: keep them all, however long it lasts.
        "CE_TICK_STATS_RETENTION_TICKS": str(min(1_000_000, int(args.duration / settings.tick_seconds) + 1_000)),
    }  # fmt: skip
    group = ProcessGroup(run_dir / "logs")
    try:
        try:
            print(f"fleet: campaign-engine up --campaigns {args.campaigns} (API {api}, logs in {group.log_dir}/)")
            up = group.spawn("up", [*campaign_engine(), "up", "--campaigns", str(args.campaigns)], env)
            wait_for_fleet(client, api, up, args.start_timeout)
            first = int(client.get(keys.LAST_TICK) or 0)
            print(f"load: {args.users} users for {args.duration} s from tick {first}")
            locust = group.spawn("locust", [
                sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", api,
                "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s", "--stop-timeout", "10",
                "--ops-rate", str(args.ops_rate), "--tick-seconds", str(settings.tick_seconds),
                "--csv", str(args.csv.resolve()), "--only-summary", "--exit-code-on-error", "1",
            ], env)  # fmt: skip
            locust.process.wait(timeout=args.duration + 120)
            last = int(client.get(keys.LAST_TICK) or 0)
            wait_for_summary(client, last, timeout=3 * settings.tick_seconds + 5)
            fleet_died = [c.name for c in group.dead() if c is not locust]
        finally:
            group.stop_all()
        ticks = ticks_between(client, first, last)
        left = sum(cid.startswith(LOAD_PREFIX) for cid in CampaignStore(client).ids())
    finally:
        client.close()
        if server is not None:
            server.stop()
    stats_csv = Path(f"{args.csv.resolve()}_stats.csv")
    if locust.process.returncode != 0 and not stats_csv.exists():
        print(f"locust failed (exit {locust.process.returncode}):\n{locust.log_path.read_text()[-3000:]}")
        return 1
    requests = RequestStats.read(stats_csv)
    text = summary(args.campaigns, args.duration, requests, ticks, left)
    Path(f"{args.csv.resolve()}_summary.md").write_text(text + "\n")
    print(text)
    failures = sum(r.failures for r in requests if r.name == "Aggregated")
    code = locust.process.returncode
    if code != 0 or failures or fleet_died:
        print(f"locust exit {code}, {failures} failed requests, stopped: {fleet_died or 'none'}; see {group.log_dir}/")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
