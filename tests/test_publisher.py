"""Every campaign's outcome of every tick, published to a real nats-server with JetStream."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError
from rich.console import Console

from api.app import create_app
from cli.backtest import run_backtest
from common import keys
from common.fleet import decisions, metrics, publisher, stats
from common.fleet.evaluation import GroupReport, evaluate
from common.fleet.fleet import Fleet
from common.fleet.outcomes import NOT_GRANTED, OutcomeMessage, PublishedBid, of_report
from common.fleet.tick import begin
from common.market.generator import generate
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks
from tests.nats_server import MISSING, NatsServer, find_nats_server, read_outcomes

TOKEN = "t" * 32


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    binary = find_nats_server()
    if binary is None:
        pytest.skip(MISSING)
    directory = tmp_path / "nats"
    directory.mkdir()
    with NatsServer(directory, binary) as server:
        yield server


@pytest.fixture
def publishing(fleet: Fleet, nats_server: NatsServer) -> Iterator[Fleet]:
    """The ``fleet`` fixture publishing its outcomes to ``nats_server``; its publisher closed after the test."""
    fleet.settings = fleet.settings.model_copy(update={"decisions_nats_url": nats_server.url})
    yield fleet
    publisher.close_all(timeout=5.0)


def run_ticks(fleet: Fleet, ticks: range) -> list[GroupReport]:
    """Ticks run inline as the workers run them: ``begin``, then one evaluation per group."""
    reports = []
    for t in ticks:
        plan = begin(fleet, t)
        assert plan is not None
        reports += [evaluate(fleet, group, t) for group in plan.groups]
    return reports


def flushed(fleet: Fleet, timeout: float = 20.0) -> publisher.DecisionPublisher:
    out = publisher.for_process(fleet.settings)
    assert out.flush(timeout), f"{out.pending()} outcomes still unpublished after {timeout}s"
    return out


def test_an_outcome_message_round_trips_and_is_named_by_campaign_and_tick() -> None:
    bid = OutcomeMessage("c-1", 12, 1767225600.1234, (PublishedBid("search", 0.8, 2.5, 2.1, 2.6, 0.13),))
    none = OutcomeMessage("c-2", 12, 1767225600.0, reason="budget spent")
    assert OutcomeMessage.from_json(bid.to_json()) == OutcomeMessage(
        "c-1", 12, 1767225600.123, (PublishedBid("search", 0.8, 2.5, 2.1, 2.6, 0.13),)
    )
    assert OutcomeMessage.from_json(none.to_json()) == none
    assert (bid.subject, bid.msg_id) == ("ce.decisions.c-1", "c-1:12")
    assert b'"reason"' not in bid.to_json()
    with pytest.raises(ValueError, match="'tick'"):
        OutcomeMessage.from_json(b'{"campaign": "c", "ts": 1, "bids": []}')
    # The settled outcomes of bids first published as pending: their own id, so both are kept.
    late = OutcomeMessage("c-1", 12, 1767225600.0, bid.bids, late=True)
    assert OutcomeMessage.from_json(late.to_json()) == late and b'"late":true' in late.to_json()
    assert late.msg_id == "c-1:12:late" and b'"late"' not in bid.to_json()
    with pytest.raises(ValueError, match="late"):
        OutcomeMessage.from_json(b'{"campaign": "c", "tick": 1, "ts": 1, "bids": [], "late": "yes"}')


def test_a_publisher_is_not_started_without_a_url(fleet: Fleet, market: Path) -> None:
    ids = load_campaigns(fleet.r, market, 3)
    assert fleet.settings.decisions_nats_url is None
    run_ticks(fleet, range(1, 3))
    assert not publisher._publishers, "no publisher (and no thread) when CE_DECISIONS_NATS_URL is unset"
    assert ids


def test_every_evaluated_campaign_of_every_tick_is_published_once(publishing: Fleet, market: Path) -> None:
    fleet = publishing
    ids = load_campaigns(fleet.r, market, 12)
    fleet.settings = fleet.settings.model_copy(update={"campaigns_per_task": 5})
    reports = run_ticks(fleet, range(1, 9))
    out = flushed(fleet)

    got = read_outcomes(fleet.settings.decisions_nats_url or "")
    evaluated = Counter((cid, r.tick) for r in reports for cid in r.decisions)
    assert len(evaluated) == 12 * 8 and max(evaluated.values()) == 1
    assert Counter((m.campaign, m.tick) for m in got) == evaluated, "each evaluated campaign once per tick"
    assert (out.totals.published, out.totals.lost) == (len(got), 0)

    # The bids are those recorded to ce:decisions, figure for figure; a campaign without one says why.
    entries = decisions.parse(fleet.r.xrange(keys.DECISIONS))  # type: ignore[arg-type]
    recorded = {
        (d.campaign, d.tick): [(b.platform, b.bid, b.spend_cap, b.cost, b.clicks, b.conversions) for b in d.bids]
        for _id, d in entries
    }
    by_key = {(m.campaign, m.tick): m for m in got}
    for key, message in by_key.items():
        if message.bids:
            assert message.reason is None
            assert [(b.platform, b.bid, b.spend_cap, b.cost, b.clicks, b.conversions) for b in message.bids] == (
                recorded.pop(key)
            )
        else:
            assert message.reason and key not in recorded
    assert not recorded, "every campaign that bid was published"
    assert any(m.bids for m in got)
    assert set(ids) == {m.campaign for m in got}
    snap = metrics.snapshot(fleet.r)
    assert snap.counter("decisions_out_published") == len(got) and snap.counter("decisions_out_failed") == 0


def test_a_campaign_that_decided_to_bid_but_got_no_grant_says_so(publishing: Fleet, market: Path) -> None:
    fleet = publishing
    ids = load_campaigns(fleet.r, market, 2)
    assert begin(fleet, 1) is not None
    # Another delivery reserved and submitted this (campaign, tick) first: this one may not bid on it.
    fleet.ledger.reserve(ids[0], 1, {next(iter(fleet.scenario.platforms)): 1_000})
    fleet.ledger.submit(ids[0], 1)
    report = evaluate(fleet, ids, 1)
    assert report.decisions[ids[0]].bids and report.decisions[ids[1]].bids
    messages = {m.campaign: m for m in of_report(report, 0.0)}
    assert messages[ids[0]].reason == NOT_GRANTED and messages[ids[0]].bids == ()
    assert messages[ids[1]].reason is None and messages[ids[1]].bids


def test_a_redelivered_evaluation_or_a_retried_publish_is_stored_once(publishing: Fleet, market: Path) -> None:
    fleet = publishing
    ids = load_campaigns(fleet.r, market, 6)
    for t in (1, 2):
        assert begin(fleet, t) is not None
    first = evaluate(fleet, ids, 2)
    second = evaluate(fleet, ids, 2)  # the broker delivered the same evaluation again
    assert second.duplicates == 6 and not second.decisions
    out = flushed(fleet)
    # A publish retried after its acknowledgement was lost reaches the server again: JetStream drops it.
    out.offer(of_report(first, time.time()))
    flushed(fleet)
    got = read_outcomes(fleet.settings.decisions_nats_url or "")
    assert sorted((m.campaign, m.tick) for m in got) == sorted((cid, 2) for cid in ids)
    assert out.totals.published == 12 and out.totals.lost == 0, "the repeats were acknowledged, as duplicates"


def test_nats_down_never_holds_up_a_tick_and_what_is_lost_is_counted(
    publishing: Fleet, nats_server: NatsServer, market: Path
) -> None:
    fleet = publishing
    fleet.settings = fleet.settings.model_copy(update={"decisions_nats_buffer": 10, "campaigns_per_task": 4})
    ids = load_campaigns(fleet.r, market, 8)
    for t in (1, 2):  # a tick's 8 at a time: the buffer of 10 holds them until the first connection
        run_ticks(fleet, range(t, t + 1))
        flushed(fleet)
    before = {(m.campaign, m.tick) for m in read_outcomes(nats_server.url)}
    assert before == {(cid, t) for cid in ids for t in (1, 2)}

    nats_server.stop()
    started = time.perf_counter()
    down = run_ticks(fleet, range(3, 9))
    took = time.perf_counter() - started
    assert all(r.evaluated == 4 for r in down), "every tick evaluates all its campaigns with NATS down"
    # Waiting on NATS would cost each of the 12 evaluations an acknowledgement's timeout (2 s) at least.
    assert took < 8.0, f"six ticks took {took:.1f}s with NATS down: something waited on it"
    out = publisher.for_process(fleet.settings)
    # Ten outcomes wait in the buffer for NATS to come back; the other 38 of the six ticks are lost.
    assert out.pending() == 10 and out.totals.overflow == 8 * 6 - 10 and out.totals.failed == 0
    counted = wait_until(lambda: metrics.snapshot(fleet.r).counter("decisions_out_overflow") == 38)
    assert counted, "the loss reaches the fleet's metrics while NATS is down"
    settings = Settings(redis_url=fleet.settings.redis_url, api_token=TOKEN, decisions_nats_url=nats_server.url)
    with TestClient(create_app(settings), client=("127.0.0.1", 1), base_url="http://localhost") as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        health = client.get("/health", headers=auth).json()
        assert health["decisions_out"]["lost"] == 38 and health["status"] != "ok"
        assert any(reason.startswith("outcomes lost on the way to NATS") for reason in health["reasons"])
        exposed = client.get("/metrics", headers=auth).text
        assert 'ce_decisions_out_total{result="overflow"} 38.0' in exposed

    nats_server.start()
    flushed(fleet)  # the buffered ten go out once the client has reconnected
    for t in range(9, 12):  # a tick's 8 at a time: the buffer of 10 holds them
        run_ticks(fleet, range(t, t + 1))
        flushed(fleet)
    got = Counter((m.campaign, m.tick) for m in read_outcomes(nats_server.url))
    assert max(got.values()) == 1
    assert before <= set(got), "the stream kept what it stored before the outage"
    assert sum(1 for _cid, t in got if 3 <= t < 9) == 10, "what the buffer held through the outage is published"
    assert {(cid, t) for cid in ids for t in range(9, 12)} <= set(got), "publishing resumed after the restart"
    assert out.totals.lost == 38


def test_outcomes_wait_for_a_nats_server_that_is_not_up_yet(
    publishing: Fleet, nats_server: NatsServer, market: Path
) -> None:
    fleet = publishing
    nats_server.stop()
    ids = load_campaigns(fleet.r, market, 4)
    started = time.perf_counter()
    run_ticks(fleet, range(1, 3))
    assert time.perf_counter() - started < 8.0, "the evaluations waited on NATS"
    out = publisher.for_process(fleet.settings)
    assert out.pending() == 8 and out.totals.lost == 0
    nats_server.start()
    flushed(fleet)
    got = read_outcomes(nats_server.url)
    assert sorted((m.campaign, m.tick) for m in got) == sorted((cid, t) for cid in ids for t in (1, 2))


def test_a_failing_publisher_never_fails_an_evaluation(
    fleet: Fleet, market: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_settings: Settings) -> publisher.DecisionPublisher:
        raise RuntimeError("no thread to be had")

    fleet.settings = fleet.settings.model_copy(update={"decisions_nats_url": "nats://127.0.0.1:1"})
    monkeypatch.setattr(publisher, "for_process", broken)
    ids = load_campaigns(fleet.r, market, 3)
    assert begin(fleet, 1) is not None
    report = evaluate(fleet, ids, 1)
    assert report.evaluated == 3 and fleet.r.hget(keys.tick_counters(1), "evaluated") == "3"
    assert "outcomes of tick 1 not handed to the publisher" in caplog.text


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.slow
def test_a_live_worker_publishes_every_outcome_through_a_nats_restart(
    redis_url: str, nats_server: NatsServer, market: Path, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    load_campaigns(client, market, 20)
    env = fleet_env(redis_url, tmp_path, market, CE_TICK_SECONDS="0.5", CE_DECISIONS_NATS_URL=nats_server.url,
                    CE_DECISIONS_NATS_BUFFER="10")  # fmt: skip
    with running(env, tmp_path / "logs", concurrency=2) as group:
        wait_for_ticks(client, 4, group, timeout=60)
        nats_server.stop()
        stopped = wait_for_ticks(client, 8, group, timeout=60)[-1]
        nats_server.start()
        wait_for_ticks(client, 14, group, timeout=60)
    # The pool processes published or counted what they held as they stopped.
    summaries = stats.parse(client.xrange(keys.TICK_STATS))  # type: ignore[arg-type]
    outage = summaries[4:8]  # summarised while NATS was down
    assert all(s.evaluated > 0 for s in outage), f"ticks went on with NATS down: {outage}"
    got = Counter((m.campaign, m.tick) for m in read_outcomes(nats_server.url))
    assert max(got.values()) == 1, "no (campaign, tick) twice"
    per_tick = Counter(t for _cid, t in got)
    last = max(max(per_tick), summaries[-1].tick) + 2
    evaluated = {t: int(client.hget(keys.tick_counters(t), "evaluated") or 0) for t in range(last + 1)}
    snap = metrics.snapshot(client)
    lost = snap.counter("decisions_out_overflow") + snap.counter("decisions_out_failed")
    assert snap.counter("decisions_out_published") == sum(per_tick.values())
    figures = f"published {sum(per_tick.values())}, lost {lost}, evaluated {sum(evaluated.values())}"
    assert sum(per_tick.values()) + lost == sum(evaluated.values()), f"each published or counted lost: {figures}"
    assert lost > 0, "four ticks of 20 outcomes overflow two buffers of 10"
    # From the fourth tick after the stop (the server is back, the client reconnected), all is published.
    resumed = [s.tick for s in summaries if s.tick >= int(stopped["tick"]) + 4]
    assert resumed and all(per_tick[t] == evaluated[t] for t in resumed), "publishing resumed after the restart"
    client.close()


def test_the_nats_url_names_nats_servers() -> None:
    assert Settings(decisions_nats_url=" ").decisions_nats_url is None, "empty is unset"
    both = Settings(decisions_nats_url="nats://a:4222, tls://b:4222")
    assert both.nats_servers == ["nats://a:4222", "tls://b:4222"]
    with pytest.raises(ValidationError, match="want nats://host:port"):
        Settings(decisions_nats_url="redis://a:6379")


def test_a_backtest_publishes_nothing_to_the_live_stream(
    redis_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    scenario = tmp_path / "small.json"
    generate(campaigns=4, platforms=2, ticks=20, seed=21).save(scenario)
    settings = Settings(redis_url=redis_url, run_dir=tmp_path, decisions_nats_url=nats_server.url)
    report = run_backtest(settings, scenario, tmp_path / "log.jsonl", None, "inline", Console(quiet=True),
                          show_progress=False)  # fmt: skip
    assert report.totals()["bids"] > 0
    assert not publisher._publishers, "no publisher started: simulated outcomes stay out of the stream"
