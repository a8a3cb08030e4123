"""What the API shows of a campaign: its definition, balance, outcomes so far and pacing.

Everything for a page of campaigns is read in one pipelined round trip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from api.context import TickInfo
from api.schemas import BalanceView, CampaignView, FlightView, GoalView, OutcomesView, PacingView
from common.engine import GoalStatus
from common.engine.state import GOAL_TOLERANCE
from common.fleet import state
from common.fleet.state import StateRecord
from common.flights import iso, time_of
from common.ledger import Balance, queue_balance
from common.models import Campaign, GoalMetric
from common.money import from_micros
from common.redis_conn import Client


def balance_view(balance: Balance | None) -> BalanceView:
    """The ledger's balance in micro-units and in currency; zero when no budget was opened."""
    micros = {name: 0 if balance is None else getattr(balance, name) for name in Balance.FIELDS}
    return BalanceView(
        **{f"{name}_micros": value for name, value in micros.items()},
        **{name: from_micros(value) for name, value in micros.items()},
    )


def outcomes_view(state: StateRecord) -> OutcomesView:
    spend, value, conversions = state.spend, state.value, state.conversions
    return OutcomesView(
        spend=spend,
        value=value,
        clicks=state.clicks,
        conversions=conversions,
        last_tick=state.last_tick,
        cpa=spend / conversions if conversions > 0 else None,
        roi=value / spend if spend > 0 else None,
    )


def pacing_view(campaign: Campaign, balance: BalanceView, state: StateRecord, tick: TickInfo) -> PacingView:
    """The plan to pace against: the budget spread evenly over the flight (the engine plans one tick at a
    time, re-solving against the budget left, so it has no cumulative plan of its own), with what the
    engine last planned and decided beside it."""
    spec = campaign.spec
    engine = {
        "engine_planned": _finite(state.planned),
        "lam": _finite(state.lam),
        "no_bid_reason": state.reason,
    }
    if spec.end_tick is None:
        return PacingView(elapsed_share=None, plan=None, spent_vs_plan=None, **engine)
    done = 0 if tick.last is None else tick.last + 1 - spec.start_tick
    share = min(1.0, max(0.0, done / (spec.end_tick - spec.start_tick)))
    plan = spec.budget * share
    spent_vs_plan = balance.spent / plan if plan > 0 else None
    return PacingView(elapsed_share=share, plan=plan, spent_vs_plan=spent_vs_plan, **engine)


def goal_view(campaign: Campaign, state: StateRecord) -> GoalView | None:
    """The goal's progress: achieved from the outcomes so far, the projection from the last decision
    that planned for this very goal (a goal changed since reads as pending until the next tick)."""
    goal = campaign.spec.goal
    if goal is None:
        return None
    achieved = state.clicks if goal.metric is GoalMetric.CLICKS else state.conversions
    record = state.goal
    planned = record is not None and record.metric == goal.metric.value and record.target == goal.target
    if achieved >= goal.target * (1 - GOAL_TOLERANCE):
        status, shortfall = GoalStatus.MET.value, 0.0
    elif record is not None and planned:
        status, shortfall = record.status, record.shortfall
    else:
        status, shortfall = "pending", None
    return GoalView(
        metric=goal.metric.value,
        target=goal.target,
        achieved=achieved,
        projected=_finite(record.projected) if record is not None and planned else None,
        status=status,
        shortfall=shortfall,
        as_of_tick=state.last_tick if planned else None,
    )


def flight_view(campaign: Campaign, tick: TickInfo) -> FlightView:
    spec = campaign.spec

    def at(t: int | None) -> str | None:
        return None if t is None or tick.epoch is None else iso(time_of(t, tick.epoch, tick.tick_seconds))

    return FlightView(
        start_tick=spec.start_tick, end_tick=spec.end_tick, start=at(spec.start_tick), end=at(spec.end_tick)
    )


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a figure is shown as unknown."""
    return value if value is not None and math.isfinite(value) else None


def campaign_views(client: Client, campaigns: Sequence[Campaign], tick: TickInfo) -> list[CampaignView]:
    pipe = client.pipeline(transaction=False)
    for c in campaigns:
        queue_balance(pipe, c.id)
        state.queue_read(pipe, c.id)
    replies: list[Any] = pipe.execute()
    views = []
    for i, c in enumerate(campaigns):
        balance = balance_view(Balance.from_row(replies[2 * i]))
        stored = StateRecord.from_hash(replies[2 * i + 1])
        views.append(
            CampaignView(
                id=c.id,
                status=c.status.value,
                spec=c.spec,
                flight=flight_view(c, tick),
                balance=balance,
                outcomes=outcomes_view(stored),
                pacing=pacing_view(c, balance, stored, tick),
                goal=goal_view(c, stored),
            )
        )
    return views
