"""Request and response bodies of the HTTP API, as they appear in its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.models import CampaignSpec, PlatformFigures


class BalanceView(BaseModel):
    """The ledger's figures in integer micro-units (exact) and in currency units (for people)."""

    budget_micros: int
    remaining_micros: int
    reserved_micros: int
    spent_micros: int
    budget: float
    remaining: float
    reserved: float
    spent: float


class OutcomesView(BaseModel):
    """What the campaign's bids achieved so far (expected values of the market model)."""

    spend: float
    value: float
    clicks: float
    conversions: float
    last_tick: int | None = Field(description="Last tick the engine decided for the campaign, whether it bid or not.")
    cpa: float | None = Field(description="Spend per conversion; null before the first conversion.")
    roi: float | None = Field(description="Value per unit of spend; null before the first spend.")


class PacingView(BaseModel):
    elapsed_share: float | None = Field(description="Share of the flight that has run; null for open flights.")
    plan: float | None = Field(description="Spend planned by now: budget times the elapsed share.")
    spent_vs_plan: float | None = Field(description="Ledger spend divided by the plan.")
    engine_planned: float | None = Field(
        default=None, description="Spend the decision engine planned for the campaign's last evaluated tick."
    )
    lam: float | None = Field(default=None, description="The engine's pacing multiplier: bids are value / (1 + lam).")
    no_bid_reason: str | None = Field(default=None, description="Why the engine bid nothing at its last tick, if so.")


class CampaignView(BaseModel):
    id: str
    status: str
    spec: CampaignSpec
    balance: BalanceView
    outcomes: OutcomesView
    pacing: PacingView


class CampaignList(BaseModel):
    total: int = Field(description="Campaigns matching the filter, before limit and offset.")
    campaigns: list[CampaignView]


class FeedPost(BaseModel):
    """Figures of one tick, for one platform or several."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"tick": 42, "platforms": {"search": {"cpc": 0.82, "cvr": 0.031, "volume": 118.5}}}]
        },
    )

    tick: int = Field(ge=0, description="The tick the figures describe (published after it ended).")
    platforms: dict[str, PlatformFigures] = Field(min_length=1, description="Platform id -> figures.")


class FeedAccepted(BaseModel):
    tick: int
    platforms: list[str]
    written: int = Field(description="(platform, tick) pairs stored by this request.")
    already_published: int = Field(description="Pairs that were stored before: the first publication stands.")


class Decision(BaseModel):
    id: str = Field(
        description="The bid's id: its entry's id in ce:decisions and its place in the entry, `<entry id>/<n>`."
    )
    ts: float
    tick: int
    campaign: str
    platform: str
    bid: float
    spend_cap: float
    cost: float
    clicks: float
    conversions: float


class DecisionList(BaseModel):
    decisions: list[Decision] = Field(description="Newest first.")
    scanned: int = Field(description="Stream entries read to answer.")


class DecisionsOutView(BaseModel):
    published: int = Field(description="Outcomes acknowledged by NATS JetStream, fleet-wide.")
    lost: int = Field(description="Outcomes dropped on a full buffer or failed past the retries, fleet-wide.")
    last_loss_age_seconds: float | None = Field(description="Seconds since an outcome was last lost; null: never.")


class HealthView(BaseModel):
    status: str = Field(
        description="ok; degraded while over capacity or losing outcomes to NATS (200); or unavailable (503); "
        "with reasons."
    )
    reasons: list[str]
    redis: bool
    workers_online: int
    workers: list[str]
    last_tick: int | None
    last_tick_age_seconds: float | None
    queue_depth: dict[str, int] | None
    over_capacity: bool = Field(description="Short ticks running: not every due campaign is evaluated in time.")
    evaluated_share: float | None = Field(description="Share of the newest summarised tick's due campaigns evaluated.")
    short_ticks: int = Field(description="Ticks running, up to the newest summarised, that were short.")
    decisions_out: DecisionsOutView | None = Field(
        description="Outcomes published to NATS (CE_DECISIONS_NATS_URL) and lost on the way; null when not set."
    )


class TickStat(BaseModel):
    model_config = ConfigDict(extra="allow")

    tick: int
    fanned: int
    evaluated: int
    bids: int
    spend: float
    value: float
    late: int
    dropped: int
    missed: int
    worst_latency_ms: float
    evaluated_share: float
    over_capacity: bool


class SystemView(BaseModel):
    workers_online: int
    workers: list[str]
    queue_depth: dict[str, int] | None
    last_tick: int | None
    last_tick_age_seconds: float | None
    tick_seconds: float
    current_tick: int


class Totals(BaseModel):
    campaigns: int
    active: int
    budget: float
    spent: float
    plan: float
    value: float
    conversions: float


class OverviewCampaign(CampaignView):
    roi_trend: list[float | None] = Field(description="Value per spend of each of the last ticks, oldest first.")


class Overview(BaseModel):
    now: float
    system: SystemView
    totals: Totals
    campaigns: list[OverviewCampaign]
    trend_ticks: list[int]


class PlatformSeries(BaseModel):
    forecast: dict[str, list[float | None]] = Field(description="cpc, cvr, volume -> value per tick.")
    actual: dict[str, list[float | None]]


class PlatformsView(BaseModel):
    ticks: list[int]
    platforms: dict[str, PlatformSeries]


class TicksView(BaseModel):
    ticks: list[TickStat] = Field(description="Oldest first.")


def example(value: Any) -> dict[str, Any]:
    return {"default": {"value": value}}
