"""How long the fleet took to recover from each fault, and the report of a run (JSON and a table).

A tick is complete when its summary (``ce:tick:stats``) shows every campaign it fanned out evaluated
or skipped on time (``missed`` 0). A tick without a summary never ran, or its successor never did.
Recovery from a fault is the time from the fault's end to the end of the first complete tick that
started at or after it (the tick's start plus its slowest evaluation): under a tick when the fault
left the fleet running.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.chaos.faults import Fault
from common.fleet.clock import Clock
from common.fleet.stats import TickStats


@dataclass(frozen=True)
class Recovery:
    seconds: float | None  # None: no complete tick after the fault before the run ended
    tick: int | None  # the first complete tick
    disturbed: list[int]  # ticks from the fault's start to the recovery that were not complete


def is_complete(entry: TickStats | None) -> bool:
    return entry is not None and entry.missed == 0


def recovery(fault: Fault, by_tick: dict[int, TickStats], clock: Clock, last_tick: int) -> Recovery:
    first = clock.tick_at(fault.start)
    t = clock.tick_at(fault.end)
    if clock.start_of(t) < fault.end:
        t += 1
    while t <= last_tick and not is_complete(by_tick.get(t)):
        t += 1
    if t > last_tick:
        return Recovery(None, None, [n for n in range(first, last_tick + 1) if not is_complete(by_tick.get(n))])
    done = clock.start_of(t) + by_tick[t].worst_latency_ms / 1000
    disturbed = [n for n in range(first, t) if not is_complete(by_tick.get(n))]
    return Recovery(round(max(0.0, done - fault.end), 3), t, disturbed)


def fault_rows(
    faults: Sequence[Fault], stats: Sequence[TickStats], clock: Clock, began: float, last_tick: int
) -> list[dict[str, Any]]:
    by_tick = {s.tick: s for s in stats}
    rows = []
    for f in faults:
        rec = recovery(f, by_tick, clock, last_tick)
        rows.append({
            "kind": f.kind, "target": f.target,
            "start_s": round(f.start - began, 3), "end_s": round(f.end - began, 3),
            "start_tick": clock.tick_at(f.start), "lasted_s": round(f.seconds, 3),
            "recovery_s": rec.seconds, "recovered_at_tick": rec.tick,
            "ticks_disturbed": len(rec.disturbed), "disturbed": rec.disturbed[:50], "detail": f.detail,
        })  # fmt: skip
    return rows


def by_kind(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["kind"]].append(row)
    out = {}
    for kind, items in sorted(grouped.items()):
        times = [r["recovery_s"] for r in items if r["recovery_s"] is not None]
        out[kind] = {
            "count": len(items),
            "not_recovered": len(items) - len(times),
            "recovery_s_max": max(times) if times else None,
            "recovery_s_mean": round(sum(times) / len(times), 3) if times else None,
            "ticks_disturbed": sum(r["ticks_disturbed"] for r in items),
        }
    return out


def print_report(report: dict[str, Any], console: Console) -> None:
    # Wide enough for the tables when the output is a file or a pipe (rich assumes 80 columns there).
    console = Console(file=console.file, width=max(console.width, 170), soft_wrap=True)
    table = Table(title="faults injected", title_justify="left")
    for name in ("#", "kind", "target", "at s", "tick", "lasted s", "recovery s", "ticks hit", "detail"):
        table.add_column(name, justify="right" if name not in ("kind", "target", "detail") else "left")
    for i, row in enumerate(report["faults"], 1):
        rec = "never" if row["recovery_s"] is None else f"{row['recovery_s']:.2f}"
        detail = _detail(row["detail"])
        table.add_row(
            str(i), row["kind"], row["target"], f"{row['start_s']:.1f}", str(row["start_tick"]),
            f"{row['lasted_s']:.2f}", rec, str(row["ticks_disturbed"]), detail[:100],
        )  # fmt: skip
    console.print(table)
    kinds = Table(title="by kind", title_justify="left")
    for name in ("kind", "count", "recovery max s", "recovery mean s", "not recovered", "ticks hit"):
        kinds.add_column(name, justify="left" if name == "kind" else "right")
    for kind, s in report["by_kind"].items():
        kinds.add_row(
            kind, str(s["count"]), _num(s["recovery_s_max"]), _num(s["recovery_s_mean"]), str(s["not_recovered"]),
            str(s["ticks_disturbed"]),
        )  # fmt: skip
    console.print(kinds)
    t, led, pl = report["ticks"], report["ledger"], report["platforms"]
    console.print(
        f"ticks {t['first']}-{t['last']}: {t['summarised']} summarised, {t['complete']} complete, "
        f"{t['incomplete']} incomplete, {t['missing']} never summarised; duplicates ignored {t['duplicates']}, "
        f"ticks claimed twice refused {t['claims_refused']}, "
        f"settles after the sweeper's charge {t.get('late_settles', 0)}"
    )
    console.print(
        f"ledger: {led['campaigns']} campaigns, budget {led['budget']}, spent {led['spent']}, "
        f"remaining {led['remaining']} (micro-units); final sweep released {report['final_sweep']['released']}, "
        f"charged {report['final_sweep']['charged']}; {len(led['problems'])} problems"
    )
    console.print(
        f"platforms: {pl['charges']} charges of {pl['charged']} in all; the ledger settled {pl['settled']} as "
        f"charged and {pl['swept']} at full grants ({pl['by_sweeper']} reservations, on which the platforms "
        f"charged {pl['swept_platform_charged']}: {pl['overcharge']} lost to the campaigns); "
        f"{pl['released']} released; {len(pl['problems'])} problems"
    )
    for what in ("unexpected",):
        for line in report[what]:
            console.print(f"[yellow]{what}:[/] {line}", highlight=False)
    for line in (led["problems"] + pl["problems"])[:40]:
        console.print(f"[red]problem:[/] {line}", highlight=False)
    console.print("[green]exact[/]" if report["ok"] else "[red]NOT EXACT[/]")


def _detail(detail: dict[str, Any]) -> str:
    """The fault's detail in a line: counts first, lists last, the sweeper's counts only when not 0."""
    shown = {k: v for k, v in detail.items() if k != "tick" and not (k.startswith("swept_") and v == 0)}
    ordered = sorted(shown.items(), key=lambda kv: isinstance(kv[1], list))
    return ", ".join(f"{k}={v}" for k, v in ordered)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
