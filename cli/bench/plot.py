"""The bench's plot: tick latency and throughput against the campaign count, the ceilings as lines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt

from cli.bench.report import BenchResult


def plot(result: BenchResult, out: Path) -> None:
    counts = [c.campaigns for c in result.counts]
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for name, style in (("p50", "-o"), ("p95", "-s"), ("p99", "-^")):
        latency.plot(counts, [c.figures[f"latency_{name}_ms"] for c in result.counts], style, label=name)
    tick_ms = float(result.setup["tick_seconds"]) * 1000
    latency.axhline(tick_ms, color="#d62728", linestyle="--", label="tick length")
    latency.set_ylabel("tick boundary to its slowest evaluation (ms)")
    throughput.plot(counts, [c.figures["evaluations_per_s"] for c in result.counts], "-o", label="evaluations/s")
    throughput.plot(counts, [c.figures["tasks_per_s"] for c in result.counts], "-s", label="evaluate tasks/s")
    throughput.axhline(result.bare.per_s, color="#2ca02c", linestyle="--", label="bare Redis loop, evaluations/s")
    throughput.axhline(result.noop.per_s, color="#9467bd", linestyle=":", label="Celery no-op, tasks/s")
    throughput.set_ylabel("per second of wall time")
    for ax in (latency, throughput):
        ax.set_xlabel("campaigns")
        ax.set_xscale("log")
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    cores = result.machine.get("cpus")
    fig.suptitle(f"campaign-engine bench: {result.setup['concurrency']} worker processes, {cores} cores")
    fig.savefig(out, dpi=120)
    plt.close(fig)
