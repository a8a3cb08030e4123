"""Property test: random sequences of ledger calls agree with a plain in-memory model.

Hypothesis drives the real scripts on the real server with duplicates, calls out of order (settle
before reserve, release after settle, settle after release, submit after release or settle, release
after submit), pauses, flights, adjustments, batches, sweeps and script flushes; after every step the
balances and every reservation's state must match the model and every invariant must hold exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from common.errors import LedgerError
from common.ledger import (
    AdjustRefused,
    Balance,
    Grant,
    Ledger,
    NoReservation,
    NotReservable,
    ReservationReleased,
    ReservationSettled,
    ReservationState,
    ReservationSubmitted,
    Settlement,
    Swept,
    UnknownBudget,
)
from tests.ledger_helpers import audit, make_campaign

PLATFORMS = ("a", "b", "c")
# c0 flies forever, c1 over ticks [2, 6), c2 has a budget but no campaign record.
FLIGHTS: dict[str, tuple[int, int | None] | None] = {"c0": (0, None), "c1": (2, 6), "c2": None}
CIDS = sorted(FLIGHTS)

cids = st.sampled_from(CIDS)
ticks = st.integers(0, 7)
caps = st.lists(st.sampled_from(PLATFORMS), min_size=1, max_size=3, unique=True).flatmap(
    lambda ps: st.tuples(*(st.integers(0, 400) for _ in ps)).map(lambda vs: dict(zip(ps, vs, strict=True)))
)
costs = st.dictionaries(st.sampled_from((*PLATFORMS, "z")), st.integers(0, 450), max_size=3)


@dataclass
class Res:
    state: str
    grants: dict[str, int]
    costs: dict[str, int] = field(default_factory=dict)
    released: int = 0
    charged: bool = False  # settled by the sweeper at the full grant
    returned: int = 0
    extra: int = 0
    unreserved: bool = False


@dataclass
class Camp:
    status: str = "active"
    balance: list[int] | None = None  # budget, remaining, reserved, spent, overdraft
    res: dict[int, Res] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)


class Model:
    def __init__(self) -> None:
        self.camps = {cid: Camp() for cid in CIDS}

    def open(self, cid: str, budget: int) -> Balance:
        camp = self.camps[cid]
        if camp.balance is None:
            camp.balance = [budget, budget, 0, 0, 0]
        return Balance(*camp.balance)

    def reserve(self, cid: str, tick: int, caps: dict[str, int]) -> Grant | type[LedgerError]:
        camp = self.camps[cid]
        if tick in camp.res and camp.res[tick].state != "absent":
            r = camp.res[tick]
            remaining = camp.balance[1] if camp.balance else 0
            return Grant(cid, tick, r.grants, remaining, ReservationState(r.state), True)
        flight = FLIGHTS[cid]
        if flight is None or camp.status != "active":
            return NotReservable
        start, end = flight
        if tick < start or (end is not None and tick >= end):
            return NotReservable
        if camp.balance is None:
            return UnknownBudget
        left = camp.balance[1]
        grants = {}
        for p, cap in caps.items():
            grants[p] = min(cap, left)
            left -= grants[p]
        total = sum(grants.values())
        camp.balance[1] -= total
        camp.balance[2] += total
        camp.res[tick] = Res("open", grants)
        return Grant(cid, tick, grants, camp.balance[1], ReservationState.OPEN, False)

    def _unreleased(self, cid: str, tick: int) -> Res | type[LedgerError]:
        """The reservation of ``tick``, or the refusal when there is none to act on."""
        r = self.camps[cid].res.get(tick)
        if r is None or r.state == "absent":
            return NoReservation
        return ReservationReleased if r.state == "released" else r

    def submit(self, cid: str, tick: int) -> Grant | type[LedgerError]:
        r = self._unreleased(cid, tick)
        if not isinstance(r, Res):
            return r
        if r.state == "settled":
            return ReservationSettled
        balance = self.camps[cid].balance
        assert balance is not None
        replay = r.state == "submitted"
        r.state = "submitted"
        return Grant(cid, tick, r.grants, balance[1], ReservationState.SUBMITTED, replay)

    def settle(self, cid: str, tick: int, costs: dict[str, int]) -> Settlement | type[LedgerError]:
        camp = self.camps[cid]
        if camp.balance is None:
            return UnknownBudget
        balance = camp.balance
        r = camp.res.get(tick)
        if r is None:
            r = camp.res[tick] = Res("absent", dict.fromkeys(costs, 0))  # a replayed reserve shows 0 grants
        overdrawn = 0

        def beyond(extra: int) -> None:
            nonlocal overdrawn
            take = min(extra, balance[1])
            balance[1] -= take
            balance[3] += extra
            balance[4] += extra - take
            overdrawn += extra - take

        def result(replay: bool) -> Settlement:
            return Settlement(
                cid, tick, dict(r.costs), r.returned, balance[1], replay, r.extra, overdrawn, r.unreserved
            )

        if r.state == "settled":
            added = 0
            for p, c in costs.items():
                if r.charged and c > r.costs.get(p, 0):
                    beyond(c - r.costs.get(p, 0))
                    added += c - r.costs.get(p, 0)
                    r.costs[p] = c
            r.extra += added
            return result(not added)
        holding = r.state in ("open", "submitted")
        grants = r.grants if holding else {}
        r.costs = {p: costs.get(p, 0) for p in r.grants} | {p: c for p, c in costs.items() if p not in r.grants}
        if holding:
            balance[2] -= sum(r.grants.values())
        for p, cost in r.costs.items():
            covered = min(cost, grants.get(p, 0))
            r.returned += grants.get(p, 0) - covered
            balance[1] += grants.get(p, 0) - covered
            balance[3] += covered
            r.extra += cost - covered
        for p, cost in r.costs.items():
            if cost > grants.get(p, 0):
                beyond(cost - grants.get(p, 0))
        r.unreserved = not holding
        r.state = "settled"
        return result(False)

    def release(self, cid: str, tick: int) -> int | type[LedgerError]:
        camp = self.camps[cid]
        r = camp.res.get(tick)
        if r is None or r.state in ("settled", "absent"):
            return 0
        if r.state == "submitted":
            return ReservationSubmitted
        if r.state == "open":
            assert camp.balance is not None
            r.state = "released"
            r.released = sum(r.grants.values())
            camp.balance[1] += r.released
            camp.balance[2] -= r.released
        return r.released

    def sweep(self, before: int) -> Swept:
        """Open reservations below the cut-off are released, submitted ones charged at their full grant."""
        released = charged = 0
        if before <= 0:
            return Swept()
        for cid, camp in self.camps.items():
            for tick, r in camp.res.items():
                if tick >= before:
                    continue
                if r.state == "open":
                    self.release(cid, tick)
                    released += 1
                elif r.state == "submitted":
                    self.settle(cid, tick, r.grants)
                    r.charged = True
                    charged += 1
        return Swept(released, charged)

    def adjust(self, cid: str, delta: int, op: str) -> Balance | type[LedgerError]:
        camp = self.camps[cid]
        if camp.balance is None:
            return UnknownBudget
        if op in camp.ops:
            return Balance(*camp.balance) if camp.ops[op] == delta else AdjustRefused
        if camp.balance[1] + delta < 0:
            return AdjustRefused
        camp.ops[op] = delta
        camp.balance[0] += delta
        camp.balance[1] += delta
        return Balance(*camp.balance)


def same(actual: object, expected: object) -> None:
    if isinstance(expected, type):
        assert isinstance(actual, expected), f"expected {expected.__name__}, got {actual!r}"
    else:
        assert actual == expected, f"expected {expected!r}, got {actual!r}"


class LedgerMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        self.client.flushall()
        for cid, flight in FLIGHTS.items():
            if flight is not None:
                make_campaign(self.client, cid, start_tick=flight[0], end_tick=flight[1])
        self.ledger = Ledger(self.client)
        self.model = Model()

    def teardown(self) -> None:
        self.client.close()

    @staticmethod
    def _call(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except LedgerError as exc:
            return exc

    @initialize(budgets=st.dictionaries(cids, st.integers(1, 1000)))
    def open_some(self, budgets: dict[str, int]) -> None:
        """Most runs start with budgets (some with none, so that reserving without one is tried too)."""
        for cid, budget in budgets.items():
            self.open(cid, budget)

    @rule(cid=cids, budget=st.integers(1, 1000))
    def open(self, cid: str, budget: int) -> None:
        same(self.ledger.open(cid, budget), self.model.open(cid, budget))

    @rule(cid=st.sampled_from(["c0", "c1"]), status=st.sampled_from(["active", "paused", "finished"]))
    def set_status(self, cid: str, status: str) -> None:
        self.client.hset(f"{{c:{cid}}}:campaign", "status", status)
        self.model.camps[cid].status = status

    @rule(cid=cids, tick=ticks, caps=caps)
    def reserve(self, cid: str, tick: int, caps: dict[str, int]) -> None:
        same(self._call(lambda: self.ledger.reserve(cid, tick, caps)), self.model.reserve(cid, tick, caps))

    @rule(cid=cids, tick=ticks, costs=costs)
    def settle(self, cid: str, tick: int, costs: dict[str, int]) -> None:
        same(self._call(lambda: self.ledger.settle(cid, tick, costs)), self.model.settle(cid, tick, costs))

    @rule(cid=cids, tick=ticks, data=st.data())
    def settle_within_grant(self, cid: str, tick: int, data: st.DataObject) -> None:
        """Most real settles fit their grant; random costs alone would mostly be refused."""
        r = self.model.camps[cid].res.get(tick)
        grants = r.grants if r else {"a": 0}
        chosen = {p: data.draw(st.integers(0, g)) for p, g in grants.items() if data.draw(st.booleans())}
        same(self._call(lambda: self.ledger.settle(cid, tick, chosen)), self.model.settle(cid, tick, chosen))

    @rule(cid=cids, tick=ticks)
    def submit(self, cid: str, tick: int) -> None:
        same(self._call(lambda: self.ledger.submit(cid, tick)), self.model.submit(cid, tick))

    @rule(cid=cids, tick=ticks, caps=caps)
    def reserve_then_submit(self, cid: str, tick: int, caps: dict[str, int]) -> None:
        """The caller's path: submit right after a fresh reserve (random submits mostly miss)."""
        same(self._call(lambda: self.ledger.reserve(cid, tick, caps)), self.model.reserve(cid, tick, caps))
        same(self._call(lambda: self.ledger.submit(cid, tick)), self.model.submit(cid, tick))

    @precondition(lambda self: any(camp.res for camp in self.model.camps.values()))
    @rule(data=st.data(), action=st.sampled_from(["submit", "release", "sweep_it", "settle_all"]))
    def on_a_reservation(self, data: st.DataObject, action: str) -> None:
        """Act on a reservation that exists, whatever its state: random (campaign, tick) mostly miss."""
        known = sorted((cid, tick) for cid, camp in self.model.camps.items() for tick in camp.res)
        unsettled = [(cid, t) for cid, t in known if self.model.camps[cid].res[t].state in ("open", "submitted")]
        prefer_unsettled: bool = data.draw(st.booleans())
        cid, tick = data.draw(st.sampled_from(unsettled if unsettled and prefer_unsettled else known))
        if action == "submit":
            self.submit(cid, tick)
        elif action == "release":
            self.release(cid, tick)
        elif action == "sweep_it":
            self.sweep(tick + 1)
        else:  # the real cost was the whole grant (or the sweeper charged it: then a replay)
            grants = self.model.camps[cid].res[tick].grants
            same(self._call(lambda: self.ledger.settle(cid, tick, grants)), self.model.settle(cid, tick, grants))

    @rule(requests=st.lists(st.tuples(cids, ticks), min_size=1, max_size=4))
    def submit_many(self, requests: list[tuple[str, int]]) -> None:
        got = self.ledger.submit_many(requests)
        for actual, (cid, tick) in zip(got, requests, strict=True):
            same(actual, self.model.submit(cid, tick))

    @rule(cid=cids, tick=ticks)
    def release(self, cid: str, tick: int) -> None:
        same(self._call(lambda: self.ledger.release(cid, tick)), self.model.release(cid, tick))

    @rule(cid=cids, delta=st.integers(-1500, 1500).filter(bool), op=st.sampled_from(["op1", "op2", None]))
    def adjust(self, cid: str, delta: int, op: str | None) -> None:
        op_id = op or uuid.uuid4().hex
        same(self._call(lambda: self.ledger.adjust(cid, delta, op_id=op_id)), self.model.adjust(cid, delta, op_id))

    @rule(requests=st.lists(st.tuples(cids, ticks, caps), min_size=1, max_size=4))
    def reserve_many(self, requests: list[tuple[str, int, dict[str, int]]]) -> None:
        got = self.ledger.reserve_many(requests)
        for actual, (cid, tick, c) in zip(got, requests, strict=True):
            same(actual, self.model.reserve(cid, tick, c))

    @rule(requests=st.lists(st.tuples(cids, ticks, costs), min_size=1, max_size=4))
    def settle_many(self, requests: list[tuple[str, int, dict[str, int]]]) -> None:
        got = self.ledger.settle_many(requests)
        for actual, (cid, tick, c) in zip(got, requests, strict=True):
            same(actual, self.model.settle(cid, tick, c))

    @rule(before=st.integers(0, 8))
    def sweep(self, before: int) -> None:
        same(self.ledger.sweep(CIDS, before), self.model.sweep(before))

    @rule()
    def lose_scripts(self) -> None:
        self.client.script_flush()

    @invariant()
    def matches_model_and_audits(self) -> None:
        for cid, camp in self.model.camps.items():
            if camp.balance is None:
                assert cid not in self.ledger.balances([cid])
                continue
            assert self.ledger.balance(cid) == Balance(*camp.balance)
            found = audit(self.client, cid)
            assert found.open_ticks == sorted(t for t, r in camp.res.items() if r.state in ("open", "submitted"))
            assert found.states == {t: r.state for t, r in camp.res.items()}
            assert found.charged_by_sweeper == {t for t, r in camp.res.items() if r.charged}


def test_ledger_agrees_with_the_model(redis_url: str) -> None:
    machine = type("Machine", (LedgerMachine,), {"url": redis_url})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=120,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
