"""What ``campaign-engine bench`` found: one ``CountResult`` per campaign count, the ceilings, the table.

``measured_figures`` turns the tick summaries of a count and the snapshots around them into the
figures; it is pure, so the maths is tested on known inputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from cli.bench.ceilings import Ceiling
from cli.bench.measure import per_thousand, percentile
from common.fleet.stats import TickStats

# The first ticks of each count run while the pool warms up (imports, connections, script loads).
WARMUP_TICKS = 2


@dataclass(frozen=True)
class CpuSeconds:
    """CPU seconds spent over the measured ticks, by process.

    ``redis`` is the state store's (every node of a cluster); ``broker`` a separate broker's, 0 when the
    state store is the broker too.
    """

    redis: float
    worker_main: float
    worker_pool: float
    beat: float
    broker: float = 0.0

    @property
    def workers(self) -> float:
        return self.worker_main + self.worker_pool


@dataclass
class CountResult:
    campaigns: int
    campaigns_per_task: int
    wall_s: float
    ticks: list[TickStats]
    cpu: CpuSeconds
    worker_rss_mb: list[float]
    redis_bytes_per_campaign: float
    figures: dict[str, float] = field(default_factory=dict)
    # The state store's CPU seconds by server (``host:port``): one, or each node of a cluster.
    redis_cpu_s_by_node: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.figures:
            self.figures = measured_figures(self.ticks, self.wall_s, self.campaigns_per_task, self.cpu)


def measured_figures(ticks: list[TickStats], wall_s: float, per_task: int, cpu: CpuSeconds) -> dict[str, float]:
    """Throughput, latency percentiles, losses and CPU per 1,000 evaluations of the measured ticks."""
    if not ticks:
        raise ValueError("no measured ticks")
    evaluated = sum(t.evaluated for t in ticks)
    bids = sum(t.bids for t in ticks)
    # Tasks that ran (their campaigns evaluated, skipped or found late), not those fanned out: past
    # capacity most of what is fanned out expires in the queue unrun.
    tasks = sum(math.ceil((t.evaluated + t.skipped + t.late) / per_task) for t in ticks)
    latencies = [t.worst_latency_ms for t in ticks]
    tick_task_s = sum(t.tick_task_ms for t in ticks) / 1000
    return {
        "evaluated": evaluated,
        "evaluations_per_s": evaluated / wall_s,
        # Past capacity the fan-out's order by stake puts campaigns with more platforms first, so an
        # evaluation there places more bids than the average one: bids/s is the work done.
        "bids_per_s": bids / wall_s,
        "bids_per_evaluation": bids / evaluated if evaluated else 0.0,
        "tasks_per_s": tasks / wall_s,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "late": sum(t.late for t in ticks),
        "dropped": sum(t.dropped for t in ticks),
        "missed": sum(t.missed for t in ticks),
        "tick_task_ms": sum(t.tick_task_ms for t in ticks) / len(ticks),
        "cpu_s_per_1k_redis": per_thousand(cpu.redis, evaluated),
        "cpu_s_per_1k_broker": per_thousand(cpu.broker, evaluated),
        "cpu_s_per_1k_workers": per_thousand(cpu.workers, evaluated),
        "cpu_s_per_1k_beat": per_thousand(cpu.beat, evaluated),
        "cpu_s_per_1k_tick_task": per_thousand(tick_task_s, evaluated),
    }


@dataclass
class BenchResult:
    machine: dict[str, Any]
    setup: dict[str, Any]
    counts: list[CountResult]
    noop: Ceiling
    bare: Ceiling

    def ratios(self, result: CountResult) -> dict[str, float]:
        """The fleet against each ceiling: its evaluate tasks/s to no-op tasks/s, its evaluations/s to the loop's."""
        return {
            "tasks_to_noop": result.figures["tasks_per_s"] / self.noop.per_s,
            "evaluations_to_bare_loop": result.figures["evaluations_per_s"] / self.bare.per_s,
        }

    def to_json(self) -> dict[str, Any]:
        counts = []
        for c in self.counts:
            counts.append(
                {
                    "campaigns": c.campaigns, "campaigns_per_task": c.campaigns_per_task, "wall_s": c.wall_s,
                    **c.figures, **self.ratios(c),
                    "cpu_s": asdict(c.cpu), "worker_rss_mb": c.worker_rss_mb,
                    "redis_bytes_per_campaign": c.redis_bytes_per_campaign,
                    "redis_cpu_s_by_node": c.redis_cpu_s_by_node,
                    "ticks": [asdict(t) for t in c.ticks],
                }
            )  # fmt: skip
        ceilings = {
            name: {**asdict(ceiling), "per_s": ceiling.per_s}
            for name, ceiling in (("noop_tasks", self.noop), ("bare_loop_evaluations", self.bare))
        }
        return {"machine": self.machine, "setup": self.setup, "counts": counts, "ceilings": ceilings}

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def tables(result: BenchResult) -> tuple[Table, Table]:
    """The terminal's summary, one row per campaign count: the fleet's pace, then what it costs."""
    pace = Table(title="the fleet, per campaign count", title_justify="left")
    for name in ("campaigns", "per task", "evals/s", "bids/s", "tick p50 ms", "p95 ms", "p99 ms", "late/drop/miss",
                 "tick task ms", "÷ no-op", "÷ bare loop"):  # fmt: skip
        pace.add_column(name, justify="right")
    cost = Table(title="CPU seconds per 1,000 evaluations, and memory", title_justify="left")
    separate = any(c.cpu.broker for c in result.counts)
    redis = "Redis: state + broker" if separate else "Redis"
    for name in ("campaigns", redis, "workers", "beat", "tick task", "worker RSS MB", "Redis KB/campaign"):
        cost.add_column(name, justify="right")
    for c in result.counts:
        f, ratios = c.figures, result.ratios(c)
        pace.add_row(
            f"{c.campaigns:,}", str(c.campaigns_per_task), f"{f['evaluations_per_s']:,.0f}",
            f"{f['bids_per_s']:,.0f}", f"{f['latency_p50_ms']:,.0f}", f"{f['latency_p95_ms']:,.0f}",
            f"{f['latency_p99_ms']:,.0f}",
            f"{f['late']:.0f}/{f['dropped']:.0f}/{f['missed']:.0f}", f"{f['tick_task_ms']:,.0f}",
            f"{ratios['tasks_to_noop']:.2f}", f"{ratios['evaluations_to_bare_loop']:.2f}",
        )  # fmt: skip
        redis_cpu = f"{f['cpu_s_per_1k_redis']:.2f}"
        if separate:
            redis_cpu += f" + {f['cpu_s_per_1k_broker']:.2f}"
        cost.add_row(
            f"{c.campaigns:,}", redis_cpu, f"{f['cpu_s_per_1k_workers']:.2f}",
            f"{f['cpu_s_per_1k_beat']:.3f}", f"{f['cpu_s_per_1k_tick_task']:.2f}", _rss(c.worker_rss_mb),
            f"{c.redis_bytes_per_campaign / 1024:.1f}",
        )  # fmt: skip
    return pace, cost


def ceilings_text(result: BenchResult) -> str:
    noop, bare = result.noop, result.bare
    return (
        f"ceilings: Celery no-op {noop.per_s:,.0f} tasks/s ({noop.done:,} in {noop.seconds:.2f} s, "
        f"Redis {noop.redis_cpu_s_per_1k:.2f} CPU s/1k); "
        f"bare Redis loop {bare.per_s:,.0f} evaluations/s ({bare.done:,} in {bare.seconds:.2f} s, "
        f"Redis {bare.redis_cpu_s_per_1k:.2f} + client {bare.client_cpu_s_per_1k:.2f} CPU s/1k)"
    )


def _rss(sizes: list[float]) -> str:
    if not sizes:
        return "-"
    return f"{sum(sizes) / len(sizes):.0f} (max {max(sizes):.0f})"
