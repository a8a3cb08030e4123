"""The seasonal cycle of a platform's volume, and what it means for the rest of a flight.

Ad traffic rises and falls with the time of day, and how much a campaign can buy over the rest of
its flight depends far more on that cycle than on how the next few ticks look. Given the length of
one cycle (the *season*, in ticks), :func:`fit_cycle` fits one harmonic to the log volume of the
history, ``log v(t) = level + a cos(wt) + b sin(wt) + AR(1) noise`` with ``w = 2 pi / season``:

* by generalised least squares: the residuals are strongly autocorrelated, so the fit is
  prewhitened with their AR(1) coefficient (Cochrane-Orcutt, a few rounds); ordinary least squares
  would treat a few wandering ticks as hundreds of independent observations;
* robustly: innovations far outside the usual ones (a shock's jump) get Huber weights;
* with a Gaussian prior on ``a`` and ``b`` (sd ``amplitude_sd`` in log units): while only a small
  part of a cycle has been seen the data barely pin the harmonic down, and the prior keeps it
  near flat, which is the persistence forecast; a market without such a cycle fits to ~flat too.

:class:`VolumeOutlook` turns the fitted cycle into the expected volume of the next ``n`` ticks,
in units of the next tick's volume: ``today's level, moved along the cycle``. The level itself
still comes from the short-term forecast.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from common.models import FloatArray

AMPLITUDE_SD = 0.5  # prior sd of the cycle's cos and sin coefficients, log units
MIN_OBSERVATIONS = 20
OUTLOOK_POINTS = 48  # cumulative volume is kept every season / this many ticks
_GLS_ROUNDS = 3
_HUBER = 1.5  # innovations beyond this many robust sds are down-weighted (shocks, outage edges)
_MAX_PHI = 0.99


@dataclass(frozen=True, slots=True)
class VolumeOutlook:
    """Expected volume of the coming ticks relative to the next tick's forecast.

    ``cumulative[i]`` is the sum of the volume factors of the next ``marks[i]`` ticks (the next
    tick's factor is 1). The marks run 0, 1, 2, 4, ... up to ``step``, then every ``step`` ticks to
    one whole season; in between, the sum is interpolated, and beyond a season the cycle repeats.
    """

    season: int
    step: int
    cumulative: tuple[float, ...]

    @property
    def marks(self) -> list[int]:
        return _marks(self.season, self.step)

    def ticks(self, n: int) -> float:
        """The next ``n`` ticks' volume, in ticks of the next tick's volume."""
        if n <= 0:
            return 0.0
        cycles, rest = divmod(n, self.season)
        marks = self.marks
        i = bisect.bisect_right(marks, rest) - 1
        total = cycles * self.cumulative[-1] + self.cumulative[i]
        if marks[i] < rest:
            share = (rest - marks[i]) / (marks[i + 1] - marks[i])
            total += (self.cumulative[i + 1] - self.cumulative[i]) * share
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"season": self.season, "step": self.step, "cumulative": list(self.cumulative)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolumeOutlook:
        view = cls(int(data["season"]), int(data["step"]), tuple(float(x) for x in data["cumulative"]))
        if view.season < 2 or view.step < 1 or len(view.cumulative) != len(view.marks):
            raise ValueError("outlook: cumulative does not match season and step")
        return view


def _marks(season: int, step: int) -> list[int]:
    fine = [0] + [1 << i for i in range(max(step, 1).bit_length()) if 1 << i < step]
    return [*fine, *range(step, season, step), season]


class PlatformCycle(NamedTuple):
    """A fitted cycle: its ``period`` in ticks and the ``(a, b)`` of its harmonic."""

    period: int
    a: float
    b: float

    @property
    def coef(self) -> tuple[float, float]:
        return self.a, self.b


def fit_cycle(
    volume: Sequence[float] | FloatArray,
    first_tick: float,
    season: int,
    *,
    amplitude_sd: float = AMPLITUDE_SD,
    min_obs: int = MIN_OBSERVATIONS,
    step: float = 1.0,
) -> tuple[float, float] | None:
    """The cycle's ``(a, b)`` fitted to ``volume`` (ticks ``first_tick``, ``first_tick + step``, ...).

    Zero or unknown volumes (outages, gaps) are left out. None with fewer than ``min_obs``
    observations. With ``step`` > 1 the volumes are geometric means of blocks of ``step`` ticks
    centred on those ticks, and the harmonic they show is scaled back up by what the block means
    smooth away (``sinc(step / season)``).
    """
    v = np.asarray(volume, dtype=float)
    ticks = first_tick + step * np.arange(v.size, dtype=float)
    seen = np.isfinite(v) & (v > 0)
    if season < 2 or int(seen.sum()) < min_obs:
        return None
    y = np.log(v[seen])
    angle = 2 * math.pi * ticks[seen] / season
    x = np.column_stack([np.ones_like(angle), np.cos(angle), np.sin(angle)])
    prior = np.diag([0.0, 1.0, 1.0]) / amplitude_sd**2
    phi = 0.0
    noise = max(float(np.var(np.diff(y))) / 2, 1e-10)
    coef = np.zeros(3)
    weight = np.ones(y.size - 1)
    for _ in range(_GLS_ROUNDS + 1):
        ys, xs = y[1:] - phi * y[:-1], x[1:] - phi * x[:-1]
        wx = xs * weight[:, None]
        coef = np.linalg.solve(wx.T @ xs + noise * prior, wx.T @ ys)
        resid = y - x @ coef
        lagged = float(resid[:-1] @ resid[:-1])
        phi = min(max(float(resid[1:] @ resid[:-1]) / lagged, 0.0), _MAX_PHI) if lagged > 0 else 0.0
        innovation = resid[1:] - phi * resid[:-1]
        noise = max(float(np.var(innovation)), 1e-10)
        scale = 1.4826 * float(np.median(np.abs(innovation))) + 1e-12
        weight = np.minimum(1.0, _HUBER * scale / np.maximum(np.abs(innovation), 1e-300))
    shrink = float(np.sinc(step / season)) if step > 1 else 1.0
    return float(coef[1]) / shrink, float(coef[2]) / shrink


def outlook(cycle: tuple[float, float], tick: int, season: int, points: int = OUTLOOK_POINTS) -> VolumeOutlook:
    """The :class:`VolumeOutlook` of a fitted cycle, seen from ``tick``."""
    a, b = cycle
    angle = 2 * math.pi * np.arange(tick, tick + season, dtype=float) / season
    shape = a * np.cos(angle) + b * np.sin(angle)
    cumulative = np.concatenate([[0.0], np.cumsum(np.exp(shape - shape[0]))])
    step = max(1, math.ceil(season / points))
    return VolumeOutlook(season, step, tuple(float(cumulative[m]) for m in _marks(season, step)))
