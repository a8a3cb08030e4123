"""``campaign-engine chaos``: a live fleet for a number of ticks while faults are injected at random.

The fleet of ``cli/chaos/fleet.py`` runs the demo market; between quiet spells the driver injects
one fault at a time (``cli/chaos/faults.py``), each kind at least once, the first ones in a shuffled
order. At the end it stops beat and the workers, sweeps every reservation left (the sweeper's own
call, with a cut-off past the last tick), and checks the books (``cli/chaos/audit.py``): every
campaign's ledger exact, nothing reserved, no campaign over its budget, every platform charge in the
ledger. Recovery per fault comes from the tick summaries (``cli/chaos/report.py``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.chaos import netns
from cli.chaos.audit import Books, audit, read_books, reconcile
from cli.chaos.faults import KINDS, Fault, Injector
from cli.chaos.fleet import ChaosFleet
from cli.chaos.report import by_kind, fault_rows, is_complete, print_report
from cli.up import load_demo, write_demo_market
from common import keys
from common.fleet import stats
from common.fleet.clock import Clock
from common.ledger import Ledger
from common.market.charges import read_charges
from common.market.scenario import Scenario
from common.redis_conn import connect
from common.settings import Settings
from worker.app import create_app

# Ticks kept free of faults at the end, for the last one's recovery to show.
TAIL_TICKS = 30


@dataclass(frozen=True)
class Plan:
    ticks: int = 1000
    seed: int = 1
    tick_seconds: float = 0.4
    campaigns: int = 24
    campaigns_per_task: int = 2
    concurrency: int = 2  # pool processes per worker
    platform_reply_ms: int = 20  # the simulated platforms' answer, after they charged
    netns: bool = True
    gap_ticks: tuple[float, float] = (4.0, 10.0)  # quiet between faults

    def minimum_ticks(self) -> int:
        """Enough for one fault of each kind with its quiet spell (the longest last 20 ticks)."""
        return len(KINDS) * 30 + TAIL_TICKS


class ChaosFailed(Exception):
    """The fleet could not be run (a process did not start); not a finding about the books."""


def run_chaos(plan: Plan, run_dir: Path, report_path: Path | None, console: Console) -> dict[str, Any]:
    run_dir = run_dir.resolve()
    _clean(run_dir)
    rng = random.Random(plan.seed)
    host: netns.Host | None = None
    netns_note = "not asked for (--no-netns): every worker on this host"
    if plan.netns:
        why = netns.available()
        if why is None:
            host = netns.Host(f"ce-chaos-{os.getpid()}", 20 + os.getpid() % 200).create()
            netns_note = f"namespace {host.name}, Redis at {host.host_address} over a veth pair"
        else:
            netns_note = f"unavailable ({why}): every worker on this host, no cut_host fault"
    console.print(f"[bold]hosts[/]   {netns_note}")
    market = write_demo_market(run_dir / "market.json", plan.seed, plan.ticks + TAIL_TICKS + 40)
    fleet = ChaosFleet(run_dir, plan.tick_seconds, market, plan.campaigns_per_task, plan.platform_reply_ms, host)
    unexpected: list[str] = []
    try:
        fleet.start_servers()
        client = connect(fleet.state.url)
        broker = connect(fleet.broker.url)
        cids, _ = load_demo(client, Scenario.load(market), plan.campaigns, plan.seed + 1)
        settings = Settings(redis_url=fleet.state.url, broker_url=fleet.broker.url, tick_seconds=plan.tick_seconds)
        app = create_app(settings)
        for name in ("a", "b"):
            fleet.add_worker(name, plan.concurrency, None)
        if host is not None:
            fleet.add_worker("ns", plan.concurrency, host)
        _wait_for_workers(app, len(fleet.workers), fleet)
        fleet.start_beat()
        clock = Clock(client, plan.tick_seconds)
        first = _wait_for_first_tick(client, fleet, clock)
        began = time.time()
        end_tick = first + plan.ticks
        console.print(
            f"[bold]fleet[/]   {len(fleet.workers)} workers x {plan.concurrency} processes, {len(cids)} campaigns, "
            f"tick {plan.tick_seconds} s, ticks {first}-{end_tick - 1}; logs in {fleet.group.log_dir}"
        )
        injector = Injector(fleet, client, broker, app, clock, rng)
        faults = _inject(injector, end_tick, plan, unexpected, console)
        # Tick t is summarised when t + 1 begins: run a little past the last one.
        _wait_until_tick(clock, end_tick + 2, fleet, unexpected)
        fleet.resume_all()
        for beat in list(fleet.beats):
            fleet.stop_beat(beat)
        # The last evaluations finish and settle; then the workers stop (warm shutdown).
        time.sleep(3 * plan.tick_seconds + 1)
        fleet.group.stop_all()
        last_tick = int(client.get(keys.LAST_TICK) or 0)
        swept = Ledger(client).sweep(cids, last_tick + 1)
        books = read_books(client)
        report = _report(plan, client, clock, faults, books, fleet, first, end_tick, began, unexpected, netns_note)
        report["final_sweep"] = {"released": swept.released, "charged": swept.charged}
        app.close()
    finally:
        fleet.stop()
        if host is not None:
            host.destroy()
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, console)
    return report


def _clean(run_dir: Path) -> None:
    """Start from nothing: an AOF left by an earlier run would be loaded by the new Redis."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("redis", "broker", "charges", "logs"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for path in run_dir.glob("beat*-schedule*"):
        path.unlink()


def _wait_for_workers(app: Any, count: int, fleet: ChaosFleet, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = fleet.group.dead()
        if dead:
            raise ChaosFailed(f"{dead[0].name} exited at start; see {dead[0].log_path}")
        if len(app.control.ping(timeout=1.0)) >= count:
            return
    raise ChaosFailed(f"fewer than {count} workers answered within {timeout:.0f} s; see {fleet.group.log_dir}")


def _wait_for_first_tick(client: Any, fleet: ChaosFleet, clock: Clock, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.xlen(keys.TICK_STATS):
            return clock.tick_at(time.time()) + 1
        if fleet.group.dead():
            raise ChaosFailed(f"{fleet.group.dead()[0].name} exited; see {fleet.group.log_dir}")
        time.sleep(0.1)
    raise ChaosFailed(f"no tick summarised within {timeout:.0f} s; see {fleet.group.log_dir}")


def _inject(injector: Injector, end_tick: int, plan: Plan, unexpected: list[str], console: Console) -> list[Fault]:
    """One fault after another, each kind at least once (the first round shuffled), until the tail."""
    rng, clock = injector.rng, injector.clock
    kinds = list(injector.kinds())
    rng.shuffle(kinds)
    faults: list[Fault] = []
    while True:
        _quiet(injector.fleet, rng.uniform(*plan.gap_ticks) * plan.tick_seconds, unexpected)
        if clock.tick_at(time.time()) + 20 + TAIL_TICKS >= end_tick:
            break
        kind = kinds.pop(0) if kinds else rng.choice(injector.kinds())
        fault = injector.inject(kind)
        faults.append(fault)
        console.print(
            f"  {fault.kind:<20} {fault.target:<14} tick {clock.tick_at(fault.start):>6}  "
            f"lasted {fault.seconds:5.2f} s",
            highlight=False,
        )
        _check(injector.fleet, unexpected)
    if kinds:
        unexpected.append(f"the run was too short for every kind: {', '.join(kinds)} never injected")
    return faults


def _quiet(fleet: ChaosFleet, seconds: float, unexpected: list[str]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _check(fleet, unexpected)
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _wait_until_tick(clock: Clock, tick: int, fleet: ChaosFleet, unexpected: list[str]) -> None:
    _quiet(fleet, max(0.0, clock.start_of(tick) - time.time()), unexpected)


def _check(fleet: ChaosFleet, unexpected: list[str]) -> None:
    """A worker or beat that exited on its own is a finding: note it and start it again."""
    for worker in fleet.workers:
        if worker.child is not None and not worker.child.alive:
            code = worker.child.process.returncode
            unexpected.append(f"{time.strftime('%H:%M:%S')} worker {worker.name} exited by itself (code {code}); "
                              "restarted")  # fmt: skip
            fleet.restart_worker(worker)
    for beat in list(fleet.beats):
        if not beat.alive:
            unexpected.append(f"{time.strftime('%H:%M:%S')} {beat.name} exited by itself "
                              f"(code {beat.process.returncode}); restarted")  # fmt: skip
            fleet.beats.remove(beat)
            fleet.group.children.remove(beat)
            fleet.start_beat()


def _report(
    plan: Plan, client: Any, clock: Clock, faults: list[Fault], books: Books, fleet: ChaosFleet, first: int,
    end_tick: int, began: float, unexpected: list[str], netns_note: str,
) -> dict[str, Any]:  # fmt: skip
    summaries = [s for s in stats.parse(client.xrange(keys.TICK_STATS)) if first <= s.tick < end_tick]
    by_tick = {s.tick: s for s in summaries}
    rows = fault_rows(faults, summaries, clock, began, end_tick - 1)
    for row, fault in zip(rows, faults, strict=True):
        _annotate(row, fault, by_tick, books, clock)
    ledger_problems = audit(client, books)
    rec = reconcile(client, read_charges(fleet.charges_dir), books)
    balances = books.balances.values()
    logs = [p.read_text(errors="replace") for p in fleet.group.log_dir.glob("*.log")]
    # Each tick a second beat fired for was refused by the tick's claim: "tick N already claimed".
    refused_claims = sum(text.count("already claimed") for text in logs)
    # A stopped or cut-off evaluation that settled after the sweeper charged its reservation in full.
    late_settles = sum(text.count("settle repeated with different costs") for text in logs)
    return {
        "plan": asdict(plan),
        "hosts": netns_note,
        "ticks": {
            "first": first,
            "last": end_tick - 1,
            "summarised": len(summaries),
            "complete": sum(is_complete(s) for s in summaries),
            "incomplete": sum(not is_complete(s) for s in summaries),
            "missing": plan.ticks - len(summaries),
            "duplicates": sum(s.duplicates for s in summaries),
            "claims_refused": refused_claims,
            "late_settles": late_settles,
        },
        "faults": rows,
        "by_kind": by_kind(rows),
        "unexpected": unexpected,
        "restarts": {w.name: w.restarts for w in fleet.workers},
        "ledger": {
            "campaigns": len(books.balances),
            "budget": sum(b.budget for b in balances),
            "spent": sum(b.spent for b in balances),
            "remaining": sum(b.remaining for b in balances),
            "problems": ledger_problems,
        },
        "platforms": {
            "charges": rec.charges,
            "charged": rec.charged,
            "settled": rec.settled,
            "swept": rec.swept,
            "swept_platform_charged": rec.swept_platform_charged,
            "overcharge": rec.overcharge,
            "by_sweeper": rec.by_sweeper,
            "released": rec.released,
            "problems": rec.problems,
        },
        "ok": not ledger_problems and not rec.problems,
    }


def _annotate(row: dict[str, Any], fault: Fault, by_tick: dict[int, Any], books: Books, clock: Clock) -> None:
    """What each fault did to the books: reservations of its ticks the sweeper closed; duplicates seen."""
    low, high = clock.tick_at(fault.start) - 1, clock.tick_at(fault.end)
    charged = released = 0
    for records in books.reservations.values():
        for tick, rec in records.items():
            if low <= tick <= high:
                charged += rec.by_sweeper
                released += rec.state == "released"
    row["detail"]["swept_charged"] = charged
    row["detail"]["swept_released"] = released
    if fault.kind == "duplicate_delivery":
        entry = by_tick.get(fault.detail["tick"])
        row["detail"]["duplicates_counted"] = entry.duplicates if entry else None
