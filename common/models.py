"""Domain models: campaigns, platform figures, bids and outcomes (docs/market.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common import keys
from common.errors import InvalidInput
from common.money import to_micros

FloatArray = NDArray[np.float64]

# The ledger's integer micro-units are exact up to 2^53 - 1 (Lua's doubles): a budget must round to at
# most that many. The float (2^53 - 1) / 1e6 itself rounds to 2^53, so the bound is checked in micro-units.
MAX_BUDGET_MICROS = 2**53 - 1
MAX_BUDGET = MAX_BUDGET_MICROS / 1_000_000

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _key_safe(value: str) -> str:
    """Ids become part of Redis keys (``common/keys.py``): refuse what would break them."""
    if not keys.CAMPAIGN_ID_PATTERN.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.' or '-', starting alnum")
    return value


KeySafeId = Annotated[str, AfterValidator(_key_safe)]


class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class GoalMetric(StrEnum):
    CLICKS = "clicks"
    CONVERSIONS = "conversions"


class CampaignGoal(_Strict):
    """What the campaign is for: ``target`` clicks or conversions by the end of its flight (docs/engine.md)."""

    metric: GoalMetric
    target: PositiveFloat


# The goal's former fields, still accepted on input (each maps onto ``goal``) and never stored.
LEGACY_GOAL_FIELDS = {"reach_goal": GoalMetric.CLICKS, "conversion_target": GoalMetric.CONVERSIONS}


def _positive_number(value: Any) -> bool:
    """A number > 0, or text of one (a CSV cell), as ``PositiveFloat`` would accept it."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return math.isfinite(number) and number > 0


class CampaignSpec(_Strict):
    """A campaign as docs/market.md defines it. Ticks are the engine's tick numbers."""

    id: KeySafeId = Field(min_length=1, max_length=64)
    budget: PositiveFloat
    value_per_conversion: PositiveFloat
    platforms: dict[str, NonNegativeFloat] = Field(min_length=1)
    start_tick: int = Field(default=0, ge=0)
    end_tick: int | None = Field(default=None, ge=1)
    max_bid: PositiveFloat | None = None
    target_cpa: PositiveFloat | None = None
    goal: CampaignGoal | None = None

    @model_validator(mode="before")
    @classmethod
    def _former_goal_fields(cls, data: Any) -> Any:
        """``reach_goal: N`` and ``conversion_target: N`` were the goal's fields: read them as ``goal``."""
        if not isinstance(data, dict) or not LEGACY_GOAL_FIELDS.keys() & data.keys():
            return data
        rest = {k: v for k, v in data.items() if k not in LEGACY_GOAL_FIELDS}
        given = [name for name in LEGACY_GOAL_FIELDS if data.get(name) is not None]
        if not given:
            return rest
        name = given[-1]
        if len(given) > 1 or rest.get("goal") is not None:
            raise ValueError(f"{name}: a campaign has one goal; give only goal (metric and target)")
        if not _positive_number(data[name]):
            raise ValueError(f"{name}: must be a number > 0")
        return {**rest, "goal": {"metric": LEGACY_GOAL_FIELDS[name].value, "target": data[name]}}

    @field_validator("budget")
    @classmethod
    def _budget_in_micro_units(cls, value: float) -> float:
        # Checked as the ledger will store it, in whole micro-units, so that nothing the model accepts
        # is refused by the ledger after the campaign was written.
        if not (value <= MAX_BUDGET * 2 and 1 <= to_micros(value) <= MAX_BUDGET_MICROS):  # (huge: inf micros)
            raise ValueError(f"must be between 0.000001 and {MAX_BUDGET_MICROS:,} micro-units ({MAX_BUDGET:,.0f})")
        return value

    @field_validator("platforms")
    @classmethod
    def _platform_ids(cls, value: dict[str, float]) -> dict[str, float]:
        for pid in value:
            if not keys.PLATFORM_ID_PATTERN.match(pid):
                raise ValueError(f"platform id {pid!r} is not a valid id")
        if not any(a > 0 for a in value.values()):
            raise ValueError("at least one platform needs an audience multiplier > 0")
        return value

    @model_validator(mode="after")
    def _flight(self) -> Self:
        if self.end_tick is not None and self.end_tick <= self.start_tick:
            raise ValueError("end_tick: must be after start_tick")
        return self

    @classmethod
    def parse(cls, data: Any) -> CampaignSpec:
        """Validate untrusted input; raises ``InvalidInput`` naming each bad field."""
        if not isinstance(data, dict):
            raise InvalidInput.one("campaign", "must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc) from None

    def in_flight(self, tick: int) -> bool:
        return self.start_tick <= tick and (self.end_tick is None or tick < self.end_tick)


class Campaign(_Strict):
    """A stored campaign: its spec and its status."""

    spec: CampaignSpec
    status: CampaignStatus = CampaignStatus.ACTIVE

    @property
    def id(self) -> str:
        return self.spec.id


class PlatformFigures(_Strict):
    """What the feed publishes for one platform after a tick ends."""

    cpc: PositiveFloat
    cvr: float = Field(ge=0, le=1, allow_inf_nan=False)
    volume: NonNegativeFloat


# A platform's price spread when it is registered without one: the middle of the log-normal spreads
# of search, social and display markets (0.25 to 0.65, as common/market/generator.py draws them).
DEFAULT_PRICE_SIGMA = 0.5
MAX_PRICE_SIGMA = 5.0  # past this a "median price" means nothing: a typo, not a market


class PlatformInfo(_Strict):
    """A registered platform: what the engine needs of it beside the feed (docs/market.md)."""

    id: KeySafeId = Field(min_length=1, max_length=64)
    price_sigma: float = Field(
        default=DEFAULT_PRICE_SIGMA,
        gt=0,
        le=MAX_PRICE_SIGMA,
        allow_inf_nan=False,
        description="Spread of the market price, as the sigma of a log-normal; 0.5 when not given.",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        description=(
            "Base URL of the platform's bidding API (http:// or https://), where CE_PLATFORM_ADAPTER=http posts "
            "bids (POST <endpoint>/bids) and asks for outcomes (POST <endpoint>/outcomes); docs/operations.md."
        ),
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, such as https://ads.example.com/v1")
        if url.query or url.fragment or url.username or url.password:
            raise ValueError("must have no query, fragment or credentials (the path is kept, /bids is added)")
        try:
            url.port  # noqa: B018 - parsing it is the check: a port outside 0-65535 raises
        except ValueError:
            raise ValueError("has a port that is not a number in 1-65535") from None
        return value.strip().rstrip("/")

    @classmethod
    def parse(cls, data: Any) -> PlatformInfo:
        """Validate untrusted input; raises ``InvalidInput`` naming each bad field."""
        if not isinstance(data, dict):
            raise InvalidInput.one("platform", "must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc) from None


@dataclass(frozen=True, slots=True)
class Bid:
    """One bid of one campaign on one platform for one tick. ``spend_cap`` is in currency."""

    campaign: str
    platform: str
    bid: float
    spend_cap: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """Expected outcome of a bid under the market model."""

    cost: float
    clicks: float
    conversions: float
    waste: float

    @property
    def is_empty(self) -> bool:
        return self.cost == 0 and self.clicks == 0


NO_OUTCOME = Outcome(0.0, 0.0, 0.0, 0.0)
