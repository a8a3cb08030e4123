"""Request and response bodies of the HTTP API, as they appear in its OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from common.errors import InvalidInput
from common.flights import EXAMPLE, parse_time
from common.models import CampaignSpec, PlatformFigures


class FieldError(BaseModel):
    field: str = Field(description="The field to blame, dotted for nested ones (`platforms.search`), or `body`.")
    reason: str


class ErrorBody(BaseModel):
    """Every refusal and failure: what went wrong, and for bad input each field with its reason."""

    detail: str
    errors: list[FieldError] | None = Field(default=None, description="Present when fields are to blame.")


_ERRORS = {
    400: "The engine refused the request.",
    401: "The token is missing or wrong (see the description of the API).",
    404: "No such campaign (or platform).",
    409: "The request contradicts what is stored (an id that exists, a change racing another).",
    413: "The body is over CE_API_MAX_BODY_BYTES.",
    422: "A field is invalid: each is named with the reason.",
    500: "An internal error; the server log has the details.",
    503: "The state store is unavailable, or (event streams) CE_API_MAX_STREAMS are open.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of these refusals, each with the body it has."""
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in statuses}


# What any route may answer: a body too large, a bad parameter, a failure of the server or of Redis.
ANY_ROUTE = errors(413, 422, 500, 503)
# What a route behind the token (writes, and reads unless CE_API_READS=open) answers too.
TOKEN = errors(401)


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


class CampaignRequest(CampaignSpec):
    """A campaign to create: its flight in the fleet's ticks (`start_tick`, `end_tick`) or in wall time
    (`start`, `end`), one or the other for each edge."""

    start: str | None = Field(
        default=None,
        description="When the flight starts: an ISO-8601 date-time with an offset; instead of start_tick.",
        examples=[EXAMPLE],
    )
    end: str | None = Field(
        default=None,
        description="When the flight ends: an ISO-8601 date-time with an offset; instead of end_tick.",
        examples=["2026-12-09T10:00:00+01:00"],
    )

    @field_validator("start", "end")
    @classmethod
    def _with_offset(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked here too, so that a bad date-time is reported beside the other fields' errors.
        if value is not None:
            try:
                parse_time(str(info.field_name), value)
            except InvalidInput as exc:
                raise ValueError(exc.errors[0][1]) from None
        return value


class FlightView(BaseModel):
    """The flight in the fleet's ticks, and in wall time by the fleet's clock (UTC)."""

    start_tick: int
    end_tick: int | None
    start: str | None = Field(description="When start_tick begins; null until the fleet's clock has started.")
    end: str | None = Field(description="When the flight's last tick ends; null for an open flight or no clock.")


class GoalView(BaseModel):
    """Progress towards the campaign's goal and the engine's projection for the end of its flight."""

    metric: str = Field(description="clicks or conversions.")
    target: float
    achieved: float = Field(description="Units bought so far.")
    projected: float | None = Field(
        description="Units the engine's plan expects by the end of the flight, as of its last decision; "
        "null before the first decision for this goal."
    )
    status: str = Field(
        description="met, on track, at risk (the budget cannot buy the target: see shortfall) or pending "
        "(not yet planned)."
    )
    shortfall: float | None = Field(description="Target less projection when at risk, else 0; null while pending.")
    as_of_tick: int | None = Field(description="The tick of the decision the projection comes from.")


class CampaignView(BaseModel):
    id: str
    status: str
    spec: CampaignSpec
    flight: FlightView
    balance: BalanceView
    outcomes: OutcomesView
    pacing: PacingView
    goal: GoalView | None = Field(default=None, description="Present when the campaign has a goal.")


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


class PlatformHealth(BaseModel):
    breaker: str = Field(description="closed; open (skipped this tick); half_open (this tick tries it again).")
    failures: int = Field(description="Failing ticks in a row.")
    open_until: int = Field(description="The tick from which an open breaker tries the platform again.")
    opened: int = Field(description="Times the breaker opened.")
    error: str = Field(description="The last failure.")


class FeedHealth(BaseModel):
    newest_tick: int | None = Field(description="The newest tick with published figures; null: none yet.")
    lag_ticks: int | None = Field(description="Ticks between the tick under way and the newest figures.")
    stale: bool = Field(description="More than CE_FEED_STALE_TICKS behind, or empty: forecast from what it has.")
    stale_since_tick: int | None = Field(description="The tick from which it counted as stale.")
    stale_since: float | None = Field(description="Unix time that tick began.")
    reason: str = Field(description="What /health says of it while stale; empty when fresh.")


class DecisionsOutView(BaseModel):
    published: int = Field(description="Outcomes acknowledged by NATS JetStream, fleet-wide.")
    lost: int = Field(description="Outcomes dropped on a full buffer or failed past the retries, fleet-wide.")
    last_loss_age_seconds: float | None = Field(description="Seconds since an outcome was last lost; null: never.")


class HealthView(BaseModel):
    status: str = Field(
        description="ok; degraded (200) while over capacity, a platform's breaker is open, a clock is far off "
        "or outcomes are being lost on the way to NATS; or unavailable (503); with reasons."
    )
    reasons: list[str]
    redis: bool
    redis_unreachable_since: float | None = Field(
        None, description="Unix time this API first failed to reach Redis in the outage under way."
    )
    workers_online: int
    workers: list[str]
    no_worker_since: float | None = Field(None, description="Unix time since which no worker answered a ping.")
    last_tick: int | None
    last_tick_age_seconds: float | None
    queue_depth: dict[str, int] | None
    over_capacity: bool = Field(description="Short ticks running: not every due campaign is evaluated in time.")
    evaluated_share: float | None = Field(description="Share of the newest summarised tick's due campaigns evaluated.")
    short_ticks: int = Field(description="Ticks running, up to the newest summarised, that were short.")
    stale_ticks: int = Field(0, description="Ticks skipped since the fleet began because their deadline had passed.")
    platforms: dict[str, PlatformHealth] = Field(default_factory=dict, description="Each platform's breaker.")
    feeds: dict[str, FeedHealth] = Field(
        default_factory=dict, description="Each platform's feed: its newest figures, and whether it is stale."
    )
    clock_offsets: dict[str, float] = Field(
        default_factory=dict, description="Redis time minus each fleet process's clock, in seconds, as last measured."
    )
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
