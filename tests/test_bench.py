"""``campaign-engine bench``: its maths on known inputs, its argument checks, and one real run (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cli.bench import parse_counts
from cli.bench.ceilings import Ceiling
from cli.bench.measure import per_thousand, percentile
from cli.bench.report import BenchResult, CountResult, CpuSeconds, ceilings_text, measured_figures, tables
from common.fleet.stats import TickStats

CLI = [sys.executable, "-m", "cli.main"]


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_figures_of_known_ticks() -> None:
    ticks = [
        TickStats(tick=2, fanned=100, evaluated=100, bids=250, worst_latency_ms=100.0, tick_task_ms=20.0),
        TickStats(tick=3, fanned=100, evaluated=90, bids=225, late=4, dropped=5, missed=6, worst_latency_ms=300.0,
                  tick_task_ms=40.0),
    ]  # fmt: skip
    cpu = CpuSeconds(redis=0.19, worker_main=0.1, worker_pool=0.85, beat=0.019)
    f = measured_figures(ticks, wall_s=4.0, per_task=30, cpu=cpu)
    assert f["evaluated"] == 190 and f["evaluations_per_s"] == 47.5
    assert f["bids_per_s"] == 118.75 and f["bids_per_evaluation"] == 2.5
    assert f["tasks_per_s"] == 2, "two ticks of 4 tasks (100 campaigns, 30 a task) in 4 s"
    assert (f["latency_p50_ms"], f["latency_p99_ms"]) == (200.0, pytest.approx(298.0))
    assert (f["late"], f["dropped"], f["missed"], f["tick_task_ms"]) == (4, 5, 6, 30.0)
    assert f["cpu_s_per_1k_redis"] == pytest.approx(1.0) and f["cpu_s_per_1k_workers"] == pytest.approx(5.0)
    assert f["cpu_s_per_1k_beat"] == pytest.approx(0.1) and f["cpu_s_per_1k_tick_task"] == pytest.approx(60 / 190)
    assert per_thousand(1.0, 0) == 0.0
    # One campaign a task past capacity: the tasks that expired unrun are not counted as run.
    short = [TickStats(tick=2, fanned=100, evaluated=30, late=10, dropped=60, missed=60)]
    assert measured_figures(short, wall_s=2.0, per_task=1, cpu=cpu)["tasks_per_s"] == 20


def test_the_report_shows_each_count_and_the_ratios() -> None:
    ticks = [TickStats(tick=2, fanned=10, evaluated=10, worst_latency_ms=50.0)]
    count = CountResult(10, 1, 2.0, ticks, CpuSeconds(0.1, 0.1, 0.1, 0.0), [80.0, 90.0], 4096.0)
    result = BenchResult({"cpus": 2}, {"tick_seconds": 2.0, "concurrency": 8}, [count], Ceiling(100, 2.0),
                         Ceiling(1000, 4.0))  # fmt: skip
    assert result.ratios(count) == {"tasks_to_noop": 0.1, "evaluations_to_bare_loop": 0.02}
    console = Console(record=True, width=200)
    for summary in tables(result):
        console.print(summary)
    text = console.export_text()
    assert "85 (max 90)" in text and "4.0" in text and "0.10" in text and "0.02" in text
    assert "50 tasks/s" in ceilings_text(result) and "250 evaluations/s" in ceilings_text(result)
    assert json.loads(json.dumps(result.to_json()))["counts"][0]["ticks"][0]["evaluated"] == 10


def test_a_separate_broker_is_shown_beside_the_state_store() -> None:
    ticks = [TickStats(tick=2, fanned=10, evaluated=10, worst_latency_ms=50.0)]
    count = CountResult(10, 1, 2.0, ticks, CpuSeconds(0.5, 0.1, 0.1, 0.0, broker=0.25), [80.0], 4096.0)
    assert count.figures["cpu_s_per_1k_redis"] == 50.0 and count.figures["cpu_s_per_1k_broker"] == 25.0
    result = BenchResult({}, {}, [count], Ceiling(100, 2.0), Ceiling(1000, 4.0))
    console = Console(record=True, width=200)
    console.print(tables(result)[1])
    text = console.export_text()
    assert "state + broker" in text and "50.00 + 25.00" in text


def test_counts_parse_and_bad_ones_say_why() -> None:
    assert parse_counts("50, 100,2000") == [50, 100, 2000]
    with pytest.raises(ValueError, match="'abc'"):
        parse_counts("100,abc")
    with pytest.raises(ValueError, match="got 0"):
        parse_counts("0")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--campaigns", "0"], "--campaigns"),
        (["--campaigns", "abc"], "--campaigns"),
        (["--ticks", "1"], "--ticks"),
        (["--concurrency", "0"], "--concurrency"),
        (["--campaigns-per-task", "-3"], "--campaigns-per-task"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option(args: list[str], option: str, tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "bench", *args, "--out", str(tmp_path / "b.json")], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:"), done.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_short_bench_measures_every_figure(tmp_path: Path) -> None:
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    env = dict(os.environ, CE_RUN_DIR=str(tmp_path / "run"), CE_TICK_SECONDS="1.0")
    env.pop("CE_REDIS_URL", None)
    done = subprocess.run(
        [*CLI, "bench", "--campaigns", "50,100", "--ticks", "4", "--noop-tasks", "300", "--out", str(out),
         "--plot", str(plot)],
        capture_output=True, text=True, env=env, check=False, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the fleet, per campaign count" in done.stdout and "ceilings: Celery no-op" in done.stdout
    report = json.loads(out.read_text())
    assert [c["campaigns"] for c in report["counts"]] == [50, 100]
    figures = ("evaluations_per_s", "bids_per_s", "bids_per_evaluation", "tasks_per_s", "latency_p50_ms",
               "latency_p95_ms", "latency_p99_ms", "tick_task_ms", "cpu_s_per_1k_redis", "cpu_s_per_1k_workers",
               "cpu_s_per_1k_tick_task", "redis_bytes_per_campaign", "tasks_to_noop",
               "evaluations_to_bare_loop")  # fmt: skip
    for count in report["counts"]:
        for name in figures:
            assert math.isfinite(count[name]) and count[name] > 0, (name, count[name])
        for name in ("late", "dropped", "missed", "cpu_s_per_1k_beat"):
            assert math.isfinite(count[name]) and count[name] >= 0, (name, count[name])
        ticks = count["ticks"]
        assert len(ticks) == 2, "four ticks, the first two warm-up"
        assert count["evaluated"] == sum(t["evaluated"] for t in ticks) > 0
        assert count["evaluations_per_s"] == pytest.approx(count["evaluated"] / count["wall_s"])
        assert count["bids_per_s"] == pytest.approx(sum(t["bids"] for t in ticks) / count["wall_s"])
        assert all(t["fanned"] == count["campaigns"] for t in ticks)
        assert len(count["worker_rss_mb"]) == report["setup"]["concurrency"]
        assert all(rss > 0 for rss in count["worker_rss_mb"])
    ceilings = report["ceilings"]
    assert ceilings["noop_tasks"]["done"] == 300 and ceilings["noop_tasks"]["per_s"] > 0
    assert ceilings["bare_loop_evaluations"]["done"] >= 100 and ceilings["bare_loop_evaluations"]["refused"] == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
