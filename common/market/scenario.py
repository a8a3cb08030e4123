"""Scenario files (docs/market.md): true platform series and campaigns, loaded and validated."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common import keys
from common.errors import InvalidInput
from common.models import CampaignSpec, FloatArray, PlatformFigures, PlatformInfo


class _PlatformFile(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=64, pattern=keys.ID_JSON_PATTERN)
    price_sigma: float = Field(gt=0)
    cpc: list[float]
    cvr: list[float]
    volume: list[float]


class _ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    name: str = "scenario"
    ticks: int = Field(ge=1)
    tick_seconds: float = Field(default=2.0, gt=0)
    platforms: list[_PlatformFile] = Field(min_length=1)
    campaigns: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _series(self) -> Self:
        seen: set[str] = set()
        for i, p in enumerate(self.platforms):
            if p.id in seen:
                raise ValueError(f"platforms.{i}.id: duplicate platform {p.id!r}")
            seen.add(p.id)
            for name in ("cpc", "cvr", "volume"):
                series = getattr(p, name)
                if len(series) != self.ticks:
                    raise ValueError(f"platforms.{i}.{name}: has {len(series)} values, expected {self.ticks}")
            if min(p.cpc) <= 0:
                raise ValueError(f"platforms.{i}.cpc: every value must be > 0")
            if min(p.cvr) < 0 or max(p.cvr) > 1:
                raise ValueError(f"platforms.{i}.cvr: every value must be in [0, 1]")
            if min(p.volume) < 0:
                raise ValueError(f"platforms.{i}.volume: every value must be >= 0")
        return self


@dataclass(frozen=True)
class PlatformSeries:
    """True figures of one platform for every tick of a scenario."""

    id: str
    price_sigma: float
    cpc: FloatArray
    cvr: FloatArray
    volume: FloatArray

    @property
    def info(self) -> PlatformInfo:
        return PlatformInfo(id=self.id, price_sigma=self.price_sigma)

    def figures(self, tick: int) -> PlatformFigures:
        return PlatformFigures(cpc=float(self.cpc[tick]), cvr=float(self.cvr[tick]), volume=float(self.volume[tick]))


@dataclass(frozen=True)
class Scenario:
    name: str
    ticks: int
    tick_seconds: float
    platforms: dict[str, PlatformSeries]
    campaigns: list[CampaignSpec]

    @classmethod
    def from_dict(cls, data: Any) -> Scenario:
        try:
            raw = _ScenarioFile.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput.from_pydantic(exc, prefix="scenario.") from None
        platforms = {
            p.id: PlatformSeries(
                p.id,
                p.price_sigma,
                np.asarray(p.cpc, dtype=float),
                np.asarray(p.cvr, dtype=float),
                np.asarray(p.volume, dtype=float),
            )
            for p in raw.platforms
        }
        campaigns = []
        for i, c in enumerate(raw.campaigns):
            try:
                spec = CampaignSpec.model_validate(c)
            except ValidationError as exc:
                raise InvalidInput.from_pydantic(exc, prefix=f"scenario.campaigns.{i}.") from None
            unknown = sorted(set(spec.platforms) - set(platforms))
            if unknown:
                raise InvalidInput.one(f"scenario.campaigns.{i}.platforms", f"unknown platform {unknown[0]!r}")
            if spec.start_tick >= raw.ticks:
                raise InvalidInput.one(f"scenario.campaigns.{i}.start_tick", f"must be below ticks ({raw.ticks})")
            if spec.end_tick is None:
                spec = CampaignSpec.model_validate({**spec.model_dump(), "end_tick": raw.ticks})
            campaigns.append(spec)
        ids = [c.id for c in campaigns]
        if len(set(ids)) != len(ids):
            raise InvalidInput.one("scenario.campaigns", "campaign ids must be unique")
        return cls(raw.name, raw.ticks, raw.tick_seconds, platforms, campaigns)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            with open(path) as fh:
                data = json.load(fh)
        except OSError as exc:
            raise InvalidInput.one("scenario", f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput.one("scenario", f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ticks": self.ticks,
            "tick_seconds": self.tick_seconds,
            "platforms": [
                {
                    "id": p.id,
                    "price_sigma": p.price_sigma,
                    "cpc": [round(float(x), 6) for x in p.cpc],
                    "cvr": [round(float(x), 6) for x in p.cvr],
                    "volume": [round(float(x), 4) for x in p.volume],
                }
                for p in self.platforms.values()
            ],
            "campaigns": [c.model_dump(exclude_none=True) for c in self.campaigns],
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), separators=(",", ":")))
