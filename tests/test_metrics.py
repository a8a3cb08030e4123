"""Metrics counted in Redis by every process, and their Prometheus exposition."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from common import keys
from common.fleet import decisions, metrics, scripts, state, stats
from common.fleet.evaluation import evaluate
from common.fleet.fleet import Fleet
from common.fleet.stats import TickStats
from common.fleet.store import CampaignStore
from common.fleet.tick import begin
from common.forecast.cache import TickForecasts
from common.forecast.forecasts import Figures, Forecasts, PlatformForecast
from common.ledger import Ledger
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market
from worker.app import EVALUATION_QUEUE


def counters(r: redis.Redis) -> dict[str, float]:
    raw: dict[str, str] = r.hgetall(keys.METRICS)  # type: ignore[assignment]
    return {k: float(v) for k, v in raw.items()}


def exposition(settings: Settings) -> str:
    with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://127.0.0.1") as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_evaluations_are_counted_by_outcome(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 6)
    for t in range(1, 4):
        assert begin(fleet, t) is not None
    # The ledger reads the flight from the campaign hash: a flight that ended there is refused.
    fleet.r.hset(keys.campaign(ids[0]), "end_tick", "2")
    report = evaluate(fleet, ids, 3)
    bidders = {p.bid.campaign for p in report.placed}
    assert report.refused == 1 and report.reserved == len(bidders) == 5
    assert counters(fleet.r) == {
        "evaluations_bid": 5,
        "evaluations_no_bid": 1,
        "reservations_granted": 5,
        "reservations_refused": 1,
        "bids": len(report.placed),
        "spend_micros": sum(fleet.ledger.balance(cid).spent for cid in ids),  # what the ledger charged
        "value": pytest.approx(report.value),
        # Ticks 1 and 2 began with nobody evaluating them: two short ticks running, over capacity once.
        "over_capacity_ticks": 1,
    }
    evaluate(fleet, ids, 3)  # a duplicate delivery
    evaluate(fleet, ids[:2], 4, deadline=time.time() - 1)  # too late
    after = counters(fleet.r)
    assert after["evaluations_duplicate"] == 6 and after["evaluations_late"] == 2
    assert after["bids"] == len(report.placed), "neither bids again"


def test_a_tick_enters_the_metrics_once(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 3)
    for t in range(1, 5):
        begin(fleet, t)
    entry = TickStats(tick=9, fanned=3, worst_latency_ms=130.0)
    assert metrics.record_tick(fleet.r, entry) is True
    assert metrics.record_tick(fleet.r, entry) is False
    hist = metrics.snapshot(fleet.r).tick_seconds
    assert hist.count == 4, "ticks 1-3 were summarised by begin, and tick 9 once"
    assert dict(hist.buckets)[0.25] - dict(hist.buckets)[0.1] >= 1
    assert hist.buckets[-1] == (float("inf"), 4)


def test_forecast_error_is_measured_per_platform_and_metric(fleet: Fleet) -> None:
    fleet.r.hset(keys.feed("search"), "7", json.dumps({"cpc": 2.0, "cvr": 0.05, "volume": 0.0}))
    fleet.r.hset(keys.feed("social"), "7", json.dumps({"cpc": 1.0, "cvr": 0.1, "volume": 50.0}))
    platforms = {
        "search": _platform(2.5, 0.04, 10.0),
        "social": _platform(1.0, 0.1, 55.0),
        "video": _platform(1.0, 0.1, 1.0),  # nothing published: not measured
    }
    fleet.r.set(keys.forecast(7), TickForecasts(Forecasts(7, platforms), {}).to_json())
    metrics.record_tick(fleet.r, TickStats(tick=7))
    errors = metrics.snapshot(fleet.r).forecast_error
    assert errors[("search", "cpc")] == pytest.approx((0.25, 1, 0.25))
    assert errors[("search", "cvr")][0] == pytest.approx(0.2)
    assert ("search", "volume") not in errors, "no relative error against an outage"
    assert errors[("social", "volume")][2] == pytest.approx(0.1)
    assert not any(pid == "video" for pid, _ in errors)


def _platform(cpc: float, cvr: float, volume: float, *, up: bool = True) -> PlatformForecast:
    return PlatformForecast((Figures(cpc, cvr, volume),), Figures(0.1, 0.1, 0.1), up, 30)


def test_point_forecasts_count_an_outage_as_no_volume_and_leave_out_the_unknown() -> None:
    platforms = {"x": _platform(1.0, 0.1, 9.0, up=False), "y": _platform(2.0, math.nan, 5.0)}
    cached = TickForecasts.from_json(TickForecasts(Forecasts(3, platforms), {"x": 0.2}).to_json())
    assert cached.figures() == {"x": {"cpc": 1.0, "cvr": 0.1, "volume": 0.0}, "y": {"cpc": 2.0, "volume": 5.0}}


def test_drops_counted_after_the_summary_are_not_lost(fleet: Fleet, market: Path) -> None:
    load_campaigns(fleet.r, market, 2)
    begin(fleet, 1)
    begin(fleet, 2)  # summarises tick 1
    fleet.r.hincrby(keys.tick_counters(1), "dropped", 2)  # a worker met two expired evaluations late
    begin(fleet, 3)
    begin(fleet, 4)
    assert counters(fleet.r)["evaluations_dropped"] == 2, "counted once, by the next tick"


def test_exposition_is_valid_and_matches_redis(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 4)
    for t in range(1, 4):
        begin(fleet, t)
        evaluate(fleet, ids, t, started=time.time() - 0.02)
    begin(fleet, 4)
    text = exposition(fleet.settings)
    found = samples(text)
    snap = metrics.snapshot(fleet.r)
    assert found[("ce_bids_total", ())] == snap.counter("bids") > 0
    assert found[("ce_spend_total", ())] == pytest.approx(snap.counter("spend_micros") / 1e6)
    assert found[("ce_evaluations_total", (("outcome", "bid"),))] == snap.counter("evaluations_bid")
    assert found[("ce_reservations_total", (("result", "granted"),))] == snap.counter("reservations_granted")
    assert found[("ce_tick_duration_seconds_count", ())] == snap.tick_seconds.count == 3, "ticks 1-3"
    assert found[("ce_last_tick", ())] == 4
    assert found[("ce_queue_depth", (("queue", EVALUATION_QUEUE),))] == 0
    assert found[("ce_workers_online", ())] == 0
    assert ("ce_forecast_relative_error_count", (("metric", "cpc"), ("platform", "search"))) in found
    assert not any("campaign" in dict(labels) for _name, labels in found), "no per-campaign labels by default"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_per_campaign_series_only_when_opted_in(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 2)
    for t in range(1, 3):
        begin(fleet, t)
        evaluate(fleet, ids, t)
    opted = fleet.settings.model_copy(update={"metrics_per_campaign": True})
    found = samples(exposition(opted))
    spend = state.read(fleet.r, ids[0]).spend
    assert found[("ce_campaign_spend_total", (("campaign", ids[0]),))] == pytest.approx(spend)
    remaining = fleet.ledger.balance(ids[1]).remaining / 1e6
    assert found[("ce_campaign_budget_remaining", (("campaign", ids[1]),))] == pytest.approx(remaining)


@pytest.mark.slow
def test_prefork_workers_lose_and_double_nothing(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    """Three pool processes evaluate concurrently; the fleet counters equal what the ledger and the
    decision stream recorded, and the per-tick books."""
    market = write_market(tmp_path / "market.json")
    ids = load_campaigns(r, market, 30)
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="1.0")
    with running(env, tmp_path / "logs", concurrency=3) as group:
        wait_for_ticks(r, 6, group, timeout=60)
    time.sleep(0.5)
    summaries = stats.parse(r.xrange(keys.TICK_STATS))  # type: ignore[arg-type]
    ticks = [e.tick for e in summaries]
    books: list[dict[str, str]] = [r.hgetall(keys.tick_counters(t)) for t in range(max(ticks) + 2)]  # type: ignore[misc]

    def total(name: str) -> float:
        return sum(float(b.get(name, 0)) for b in books)

    ledger = Ledger(r)
    found = counters(r)
    bids = [d for _id, d in decisions.bids(decisions.parse(r.xrange(keys.DECISIONS)))]  # type: ignore[arg-type]
    assert found["bids"] == total("bids") == len(bids) > 0
    # Spend as the ledger charged it, each campaign's balance read through the ledger.
    assert found["spend_micros"] == sum(ledger.balance(cid).spent for cid in ids) > 0
    campaigns = CampaignStore(r).get_many(ids)
    won = sum(d.conversions * campaigns[d.campaign].spec.value_per_conversion for d in bids)
    assert found["value"] == pytest.approx(won), "the value of the conversions in the decision stream"
    assert found["evaluations_bid"] + found.get("evaluations_no_bid", 0) == total("evaluated")
    assert found.get("evaluations_late", 0) == total("late")
    assert found.get("evaluations_duplicate", 0) == total("duplicates")
    hist = metrics.snapshot(r).tick_seconds
    assert hist.count == sum(1 for e in summaries if e.fanned > 0)


def test_increments_leave_the_hashes_the_commands_would_have(r: redis.Redis) -> None:
    """One script call per hash (``metrics.Increments``) adds what the same HINCRBY/HINCRBYFLOAT sent one
    by one add, floats to the last digit; a server that does not know the script runs nothing until
    it is sent again, so every increment counts once."""
    amounts: list[tuple[str, str, float]] = [
        ("a", "evaluated", 3), ("a", "value", 0.1), ("b", "bids", 2), ("a", "value", 0.2),
        ("a", "planned", 1e-7), ("b", "value", 123.456789), ("a", "evaluated", -1), ("a", "planned", 1 / 3),
    ]  # fmt: skip
    r.script_flush()
    for round_ in (1, 2):
        commands = r.pipeline(transaction=False)
        increments = metrics.Increments()
        for key, name, amount in amounts:
            if isinstance(amount, int):
                commands.hincrby(f"cmd:{key}", name, amount)
                increments.hincrby(f"inc:{key}", name, amount)
            else:
                commands.hincrbyfloat(f"cmd:{key}", name, amount)
                increments.hincrbyfloat(f"inc:{key}", name, amount)
        commands.execute()
        pipe = r.pipeline(transaction=False)
        assert increments.queue(pipe) == 2
        replies = pipe.execute(raise_on_error=False)
        if round_ == 1:
            assert all(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies)
            assert not r.exists("inc:a", "inc:b")
            replies = scripts.script("increments").rerun_missing(r, increments.calls(), replies)
        assert replies == [6, 2]
        for key in ("a", "b"):
            assert r.hgetall(f"inc:{key}") == r.hgetall(f"cmd:{key}")
    assert r.hget("inc:a", "evaluated") == "4"
