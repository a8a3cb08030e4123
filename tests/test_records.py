"""Each stored record round-trips: written by the production writer, read back by its one reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from cli.up import tick_line
from common import keys
from common.backtest.runner import log_line
from common.engine import Decision, NoBid, PacingState
from common.fleet import decisions, state, stats
from common.fleet.decisions import CampaignDecision, DecisionRecord
from common.fleet.evaluation import GroupReport, evaluate
from common.fleet.fleet import Fleet
from common.fleet.state import StateRecord
from common.fleet.stats import TickStats
from common.fleet.tick import begin, compute_forecasts, summarize
from common.forecast.cache import TickForecasts
from common.ledger import Balance, Ledger, queue_balance
from tests.fleet import load_campaigns
from tests.ledger_helpers import make_campaign


def _ran(fleet: Fleet, market: Path, campaigns: int, last_tick: int) -> tuple[list[str], list[GroupReport]]:
    """Campaigns loaded, and ticks 1..last_tick begun and evaluated by the production path."""
    ids = load_campaigns(fleet.r, market, campaigns)
    reports = []
    for t in range(1, last_tick + 1):
        assert begin(fleet, t) is not None
        reports.append(evaluate(fleet, ids, t))
    return ids, reports


# --- the budget hash: {c:<id>}:budget ---------------------------------------------------------
@pytest.mark.parametrize("decoded", [True, False])
def test_a_balance_read_on_a_callers_pipeline_is_the_ledgers(redis_url: str, decoded: bool) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=decoded)
    ledger = Ledger(client)
    make_campaign(client, "c1")
    ledger.open("c1", 1000)
    ledger.reserve("c1", 1, {"search": 300})
    ledger.settle("c1", 1, {"search": 120})
    ledger.reserve("c1", 2, {"search": 50})
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.campaign("c1"))  # a caller's other reads share the round trip
    queue_balance(pipe, "c1")
    queue_balance(pipe, "never-opened")
    _, row, missing = pipe.execute()
    assert Balance.from_row(row) == ledger.balance("c1") == Balance(1000, 830, 50, 120)
    assert Balance.from_row(missing) is None
    client.close()


# --- the decisions stream: ce:decisions --------------------------------------------------------
def test_decisions_read_back_as_the_evaluation_placed_them(fleet: Fleet, market: Path) -> None:
    ids, _ = _ran(fleet, market, 4, 2)
    assert begin(fleet, 3) is not None
    report = evaluate(fleet, ids, 3, now=lambda: 1234.5678)
    assert report.placed
    entries: list[tuple[str, dict[str, str]]] = fleet.r.xrange(keys.DECISIONS)  # type: ignore[assignment]
    parsed = [(entry_id, entry) for entry_id, entry in decisions.parse(entries) if entry.tick == 3]
    records = [record for _id, record in decisions.bids(parsed)]
    assert records == [
        DecisionRecord(1234.568, 3, p.bid.campaign, p.bid.platform, p.bid.bid, p.bid.spend_cap, p.outcome.cost,
                       p.outcome.clicks, p.outcome.conversions, p.outcome.waste)
        for p in report.placed
    ]  # fmt: skip
    # One entry per campaign that bid, its bids in the order placed.
    campaigns = list(dict.fromkeys(p.bid.campaign for p in report.placed))
    assert [entry.campaign for _id, entry in parsed] == campaigns
    assert len(parsed) < len(records), "some campaign placed several bids in one entry"
    for (_id, fields), (_same, entry) in zip(entries[-len(parsed) :], parsed, strict=True):
        assert fields == entry.to_fields(), "field names and encodings are the stream's"
        assert list(fields) == ["ts", "tick", "campaign", "bids"]
        assert [bid[0] for bid in json.loads(fields["bids"])] == [b.platform for b in entry.bids]


def test_a_decision_round_trips_exactly_through_repr(r: redis.Redis) -> None:
    record = DecisionRecord(5.0, 7, "c1", "search", 0.1 + 0.2, 1 / 3, 2.675, 3.0000000000000004, 1e-17, 0.0)
    other = DecisionRecord(5.0, 7, "c1", "social", 1e300, 2.0, 5e-324, 0.0, 7.0, 1 / 7)
    decisions.append(r, CampaignDecision.of([record, other]), 1000)
    assert r.xlen(keys.DECISIONS) == 1, "one entry for the campaign's bids"
    (entry_id, read), *_ = decisions.parse(r.xrange(keys.DECISIONS))  # type: ignore[arg-type]
    assert read == CampaignDecision(5.0, 7, "c1", (record, other))
    assert list(decisions.bids([(entry_id, read)])) == [(f"{entry_id}/0", record), (f"{entry_id}/1", other)]
    assert decisions.split_bid_id(f"{entry_id}/1") == (entry_id, 1)
    assert decisions.split_bid_id(entry_id) == (entry_id, None)
    line = json.loads(log_line(read.bids[0]))
    assert line == {"tick": 7, "campaign": "c1", "platform": "search", "bid": 0.1 + 0.2, "spend_cap": 1 / 3,
                    "cost": 2.675, "clicks": 3.0000000000000004, "conversions": 1e-17}  # fmt: skip


def _entry_fields() -> dict[str, str]:
    return CampaignDecision.of([DecisionRecord(5.0, 7, "c1", "search", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0)]).to_fields()


@pytest.mark.parametrize("missing", ["ts", "tick", "campaign", "bids"])
def test_a_decision_entry_without_a_field_names_it(missing: str) -> None:
    fields = _entry_fields()
    del fields[missing]
    with pytest.raises(ValueError, match=f"'{missing}'"):
        CampaignDecision.from_fields(fields)


@pytest.mark.parametrize("bids", ["[[", "[]", '[["search", 1.0, 1.0]]', '[["search", 1, 1, 1, 1, 1, "x"]]'])
def test_a_decision_entry_with_malformed_bids_says_so(bids: str) -> None:
    with pytest.raises(ValueError, match="bids"):
        CampaignDecision.from_fields({**_entry_fields(), "bids": bids})


def test_an_entrys_bids_are_of_its_campaign_and_tick() -> None:
    a = DecisionRecord(5.0, 7, "c1", "search", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="not of the entry"):
        CampaignDecision.of([a, DecisionRecord(5.0, 7, "c2", "search", 1.0, 1.0, 1.0, 1.0, 1.0, 0.0)])
    with pytest.raises(ValueError, match="at least one bid"):
        CampaignDecision.of([])


# --- the engine state hash: {c:<id>}:state ------------------------------------------------------
def test_the_state_holds_the_last_decision_and_every_outcome(fleet: Fleet, market: Path) -> None:
    ids, reports = _ran(fleet, market, 4, 3)
    for cid in ids:
        stored = state.read(fleet.r, cid)
        decision = reports[-1].decisions[cid]
        assert stored.pacing == decision.pacing and stored.pacing.tick == 3
        assert (stored.lam, stored.planned, stored.last_tick) == (decision.lam, decision.planned, 3)
        assert stored.reason == (decision.reason.value if decision.reason else None)
        placed = [p for report in reports for p in report.placed if p.bid.campaign == cid]
        assert placed, "each campaign bid"
        assert stored.spend == pytest.approx(sum(p.outcome.cost for p in placed))
        assert stored.clicks == pytest.approx(sum(p.outcome.clicks for p in placed))
        assert stored.conversions == pytest.approx(sum(p.outcome.conversions for p in placed))
        assert stored.value == pytest.approx(sum(p.value for p in placed))


def test_a_campaign_never_evaluated_has_the_empty_state(r: redis.Redis) -> None:
    assert state.read(r, "new") == StateRecord()


def test_a_no_bid_reason_reads_back(r: redis.Redis) -> None:
    state.queue_decision(r, "c1", Decision((), PacingState(lam=0.25, tick=4), NoBid.NO_VALUE, planned=2.5), 4)
    stored = state.read(r, "c1")
    assert stored == StateRecord(pacing=PacingState(lam=0.25, tick=4), lam=0.25, planned=2.5, last_tick=4,
                                 reason=NoBid.NO_VALUE.value)  # fmt: skip


# --- the tick summaries: ce:tick:stats --------------------------------------------------------
def test_a_tick_summary_reads_back_as_summarize_wrote_it(fleet: Fleet, market: Path) -> None:
    _ids, reports = _ran(fleet, market, 4, 3)
    written = summarize(fleet, 3)
    entries: list[tuple[str, dict[str, str]]] = fleet.r.xrange(keys.TICK_STATS)  # type: ignore[assignment]
    read = stats.parse(entries)
    assert [e.tick for e in read] == [1, 2, 3], "begin summarised the tick before it; then tick 3"
    assert read[-1] == written
    assert entries[-1][1] == written.to_fields()
    report = reports[-1]
    assert (written.fanned, written.evaluated, written.missed, written.late) == (4, report.evaluated, 0, 0)
    assert (written.bids, written.spend_micros) == (len(report.placed), report.spend_micros) and written.bids > 0
    assert written.value == pytest.approx(report.value)
    assert written.planned == pytest.approx(sum(d.planned for d in report.decisions.values()))
    assert list(entries[-1][1]) == [
        "tick", "fanned", "evaluated", "bids", "spend_micros", "late", "dropped", "duplicates", "skipped", "value",
        "planned", "missed", "worst_latency_ms", "tick_task_ms", "short_run",
    ]  # fmt: skip


def test_a_tick_line_shows_the_summary() -> None:
    entry = TickStats(tick=12, fanned=5, evaluated=4, bids=7, spend_micros=2_500_000, late=1, dropped=2, value=9.5,
                      planned=5.0, missed=1, worst_latency_ms=42.5, tick_task_ms=12.5)  # fmt: skip
    assert TickStats.from_fields(entry.to_fields()) == entry
    words = tick_line(entry).split()
    assert words[:4] == ["tick", "12", "evaluated", "4/5"]
    assert words[words.index("spend") + 1 : words.index("spend") + 4] == ["2.50", "pace", "50%"]
    assert words[words.index("late/dropped") + 1] == "3" and words[words.index("missed") + 1] == "1"


def test_a_tick_summary_entry_without_a_field_names_it() -> None:
    fields = TickStats(tick=1).to_fields()
    del fields["missed"]
    with pytest.raises(ValueError, match="'missed'"):
        TickStats.from_fields(fields)


def test_a_tick_summary_entry_written_before_tick_task_ms_still_parses() -> None:
    fields = TickStats(tick=1, evaluated=3).to_fields()
    del fields["tick_task_ms"]
    assert TickStats.from_fields(fields) == TickStats(tick=1, evaluated=3)


# --- the forecasts cached per tick: ce:forecast:<tick> ------------------------------------------
def test_the_cached_forecasts_read_back_as_computed(fleet: Fleet, market: Path) -> None:
    _ran(fleet, market, 2, 40)
    plan = begin(fleet, 41)
    assert plan is not None
    text = fleet.r.get(keys.forecast(41))
    assert isinstance(text, str)
    cached = TickForecasts.from_json(text)
    assert cached == plan.forecasts == compute_forecasts(fleet, 41)
    assert cached.to_json() == text, "the document round-trips byte for byte"
    assert cached.sigmas == {pid: info.price_sigma for pid, info in fleet.store.platforms().items()}
    assert set(cached.forecasts.platforms) == set(cached.sigmas) and cached.forecasts.tick == 41
    figures = cached.figures()
    for pid, forecast in cached.forecasts.platforms.items():
        assert figures[pid] == {"cpc": forecast.next.cpc, "cvr": forecast.next.cvr, "volume": forecast.expected_volume}


def test_a_document_that_is_not_a_forecast_is_refused() -> None:
    for text in ("not json", "[1, 2]", '{"tick": 3, "platforms": {}}', '{"search": {"cpc": 1.0}}'):
        with pytest.raises(ValueError):
            TickForecasts.from_json(text)
