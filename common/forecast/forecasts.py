"""Per-platform forecasts of CPC, CVR and volume from the metrics feed.

Every series is modelled in log space as a local linear trend with AR(1) errors, fitted with one
vectorised pass over all platforms and metrics:

* an OLS line over the last ``window`` ticks gives the local level and slope;
* the slope is shrunk towards zero by its t-statistic (its standard error widened for the
  autocorrelation of the residuals), so a noisy window does not extrapolate a spurious trend;
* the last residual decays with the AR(1) coefficient, so the forecast starts from the newest
  value; the coefficient is floored because a short window underestimates it;
* a one-tick change far outside the window's usual changes is a level shift: the ticks before it
  are dropped, so the forecast adapts at once instead of averaging across the jump;
* isolated one-tick spikes (out and straight back) are replaced by their neighbours' mean;
* a zero volume is an outage: it is kept out of the fit, and ``up`` says whether the platform was
  serving at the last tick;
* given the length of a season, the daily cycle of volume is fitted to the whole season's history
  (:mod:`common.forecast.season`); ``outlook`` says how much volume the rest of a flight holds;
* a cycle short enough that the window holds it twice (a week of daily ticks) is fitted, as one
  harmonic, to each metric of the platform over the window, and the line and AR(1) describe what
  it leaves: a one-tick forecast then follows the cycle instead of lagging it;
* given each platform's base (:mod:`common.forecast.base`), ``path`` says where CPC, CVR and
  volume go over the coming ticks from the next tick's forecast.

With fewer than ``min_obs`` observations a series falls back to its last value (or to ``prior``).
Outputs are clipped to their domain: prices > 0, volumes >= 0, rates in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from common.forecast.base import SHRINK, PathOutlook, PlatformBase, path, pooled
from common.forecast.season import PlatformCycle, VolumeOutlook, fit_cycle, outlook
from common.models import FloatArray

METRICS = ("cpc", "cvr", "volume")
CPC, CVR, VOLUME = 0, 1, 2

_LOG_FLOOR = math.log(1e-9)  # a zero rate becomes a very small one in log space
_PRIOR_LOG_SD = 0.15  # one-step error assumed until a window can measure it
_MAX_PHI = 0.98
# Over a 30-tick window the AR(1) coefficient is poorly determined, and reverting towards a noisy
# line costs more than it gains: the floor keeps the forecast close to the last value.
_PHI_MIN = 0.9
_MIN_LOG_STEP = 1e-3  # changes below 0.1% never count as a level shift
_OUTLIER_SIGMAS = 6.0


class Figures(NamedTuple):
    cpc: float
    cvr: float
    volume: float


@dataclass(frozen=True, slots=True)
class PlatformForecast:
    """Forecasts for one platform.

    ``ahead[h-1]`` is the forecast ``h`` ticks after the last observed tick; ``next`` is ``ahead[0]``.
    ``volume`` figures are clicks *while the platform serves*; ``up`` is False during an outage.
    ``log_sd`` is the one-step forecast error of each metric in log space. ``outlook``, when a
    season is known, is the volume of the coming ticks relative to ``next.volume``.
    """

    ahead: tuple[Figures, ...]
    log_sd: Figures
    up: bool
    observations: int
    outlook: VolumeOutlook | None = None
    path: PathOutlook | None = None

    @property
    def next(self) -> Figures:
        return self.ahead[0]

    @property
    def expected_volume(self) -> float:
        """Volume forecast for the next tick, counting an ongoing outage as zero."""
        return self.ahead[0].volume if self.up else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ahead": [_json_list(f) for f in self.ahead],
            "log_sd": _json_list(self.log_sd),
            "up": self.up,
            "observations": self.observations,
            "outlook": None if self.outlook is None else self.outlook.to_dict(),
            "path": None if self.path is None else self.path.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlatformForecast:
        return cls(
            ahead=tuple(Figures(*map(_num, f)) for f in data["ahead"]),
            log_sd=Figures(*map(_num, data["log_sd"])),
            up=bool(data["up"]),
            observations=int(data["observations"]),
            outlook=VolumeOutlook.from_dict(data["outlook"]) if data.get("outlook") else None,
            path=PathOutlook.from_dict(data["path"]) if data.get("path") else None,
        )


@dataclass(frozen=True, slots=True)
class Forecasts:
    """Forecasts of every platform for ``tick``, made from the feed of the ticks before it.

    A platform without any observation is absent: the engine treats it as missing.
    """

    tick: int
    platforms: dict[str, PlatformForecast]

    def get(self, platform: str) -> PlatformForecast | None:
        return self.platforms.get(platform)

    def to_dict(self) -> dict[str, Any]:
        return {"tick": self.tick, "platforms": {pid: f.to_dict() for pid, f in self.platforms.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Forecasts:
        platforms = {str(pid): PlatformForecast.from_dict(f) for pid, f in data["platforms"].items()}
        return cls(int(data["tick"]), platforms)


def _json_list(values: Sequence[float]) -> list[float | None]:
    """JSON has no NaN: an unknown number travels as null."""
    return [v if math.isfinite(v) else None for v in values]


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class ForecastArrays:
    """The raw result of :func:`forecast_arrays`: log-space arrays, NaN where nothing is known."""

    ahead: FloatArray  # (platforms, horizon, 3)
    log_sd: FloatArray  # (platforms, 3)
    up: NDArray[np.bool_]  # (platforms,)
    observations: NDArray[np.int64]  # (platforms,), of the sparsest metric


def forecast_arrays(
    history: ArrayLike,
    *,
    window: int = 30,
    horizon: int = 5,
    min_obs: int = 5,
    prior: ArrayLike | None = None,
    periods: ArrayLike | None = None,
) -> ForecastArrays:
    """Fit every (platform, metric) series of ``history`` at once; see the module docstring.

    ``history`` has shape (platforms, ticks, 3) with metrics in ``METRICS`` order, oldest tick first
    and NaN for a missing tick; only the last ``window`` ticks are used. ``prior`` (platforms, 3),
    in natural units, stands in for a series with no data. ``periods`` (platforms,) is each
    platform's cycle in ticks (0: none); one the window holds at least twice is fitted to all three
    metrics of the platform and carried into the forecast (:func:`_seasonal`).
    """
    if window < 2 or horizon < 1 or min_obs < 1:
        raise ValueError("window must be >= 2, horizon >= 1 and min_obs >= 1")
    raw = np.asarray(history, dtype=float)
    if raw.ndim != 3 or raw.shape[2] != len(METRICS):
        raise ValueError(f"history must have shape (platforms, ticks, {len(METRICS)}), got {raw.shape}")
    n_plat, n_ticks, _ = raw.shape
    series = np.moveaxis(raw, 2, 1).reshape(n_plat * 3, n_ticks)  # row p*3+m
    vol_rows = np.arange(n_plat) * 3 + VOLUME
    last_volume = _last_valid(series[vol_rows])
    up = np.isnan(last_volume) | (last_volume > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(series > 0, np.log(series), _LOG_FLOOR)
    x[np.isnan(series)] = np.nan
    x[vol_rows] = np.where(series[vol_rows] > 0, x[vol_rows], np.nan)  # an outage is not a level

    x = x[:, -window:]
    season: FloatArray | None = None
    if periods is not None:
        per = np.asarray(periods, dtype=float).reshape(-1)
        if per.size != n_plat:
            raise ValueError(f"periods has {per.size} values for {n_plat} platforms of history")
        per = np.repeat(per, 3)
        season = _seasonal(x, per, horizon)
        if season is not None:
            x = x - season[:, : x.shape[1]]
    ahead, log_sd, n_obs = _trend_ar1(_after_shift(_despike(x)), horizon, min_obs)
    if season is not None:
        ahead = ahead + season[:, x.shape[1] :]
    if prior is not None:
        with np.errstate(divide="ignore"):
            prior_log = np.log(np.asarray(prior, dtype=float).reshape(n_plat * 3))
        missing = n_obs == 0
        ahead[missing] = prior_log[missing, None]
        log_sd[missing] = _PRIOR_LOG_SD
    return ForecastArrays(
        ahead=np.moveaxis(ahead.reshape(n_plat, 3, horizon), 1, 2),
        log_sd=log_sd.reshape(n_plat, 3),
        up=up,
        observations=n_obs.reshape(n_plat, 3).min(axis=1).astype(np.int64),
    )


def forecast(
    history: ArrayLike,
    platforms: Sequence[str],
    tick: int,
    *,
    window: int = 30,
    horizon: int = 5,
    min_obs: int = 5,
    prior: ArrayLike | None = None,
    season: int = 0,
    cycles: Mapping[str, PlatformCycle | None] | None = None,
    bases: Mapping[str, PlatformBase | None] | None = None,
) -> Forecasts:
    """Forecasts for ``tick`` from the feed of the ticks before it (``history[:, -1]`` is tick - 1).

    Platforms are in the order of ``history``'s first axis; one with no observation is left out.
    With ``season`` > 0 (ticks in one cycle of the market), each platform's volume cycle is fitted
    to the last ``season`` ticks of ``history`` and its ``outlook`` set; or, given ``cycles`` (each
    platform's fitted cycle with its own period, None where it has none), those are used as they
    are, ``season`` is ignored and ``history`` need hold no more than the ``window``. Given
    ``bases`` (:mod:`common.forecast.base`), a platform that has one gets the ``path`` of its
    figures over the coming ticks, with the persistence its platforms learn together.
    """
    periods = None
    if cycles is not None:
        periods = [c.period if (c := cycles.get(pid)) is not None else 0 for pid in platforms]
    arr = forecast_arrays(history, window=window, horizon=horizon, min_obs=min_obs, prior=prior, periods=periods)
    if len(platforms) != arr.up.shape[0]:
        raise ValueError(f"{len(platforms)} platform ids for {arr.up.shape[0]} platforms of history")
    ahead = _natural(arr.ahead)
    if bases is not None:
        bases = pooled(bases)
    out: dict[str, PlatformForecast] = {}
    for i, pid in enumerate(platforms):
        if np.isnan(ahead[i, 0]).any():
            continue
        view = _outlook(history, i, tick, season) if cycles is None else _outlook_of(cycles.get(pid), tick)
        base = None if bases is None else bases.get(pid)
        nxt = ahead[i, 0]
        plan = path(base, nxt, tick) if base is not None and bool((nxt > 0).all()) else None
        out[pid] = PlatformForecast(
            ahead=tuple(Figures(*map(float, row)) for row in ahead[i]),
            log_sd=Figures(*map(float, arr.log_sd[i])),
            up=bool(arr.up[i]),
            observations=int(arr.observations[i]),
            outlook=view,
            path=plan,
        )
    return Forecasts(tick, out)


def _outlook(history: ArrayLike, platform: int, tick: int, season: int) -> VolumeOutlook | None:
    if season <= 0:
        return None
    volume = np.asarray(history, dtype=float)[platform, -season:, VOLUME]
    cycle = fit_cycle(volume, tick - volume.size, season)
    return None if cycle is None else outlook(cycle, tick, season)


def _outlook_of(cycle: PlatformCycle | None, tick: int) -> VolumeOutlook | None:
    return None if cycle is None else outlook(cycle.coef, tick, cycle.period)


def _seasonal(x: FloatArray, periods: FloatArray, horizon: int) -> FloatArray | None:
    """Each row's cycle over the window and the ``horizon`` ticks after it, or None if no row has one.

    A row's cycle is the harmonic of its period fitted by least squares together with a level and
    a slope, over the window's known ticks; only for a period the window holds at least twice and
    with at least twice as many known ticks as coefficients. Other rows get zeros. The trend and
    AR(1) fit then describe what the cycle leaves, and the forecast adds the cycle back.
    """
    w = x.shape[1]
    rows = np.flatnonzero((periods >= 2) & (periods * 2 <= w))
    if rows.size == 0:
        return None
    out = np.zeros((x.shape[0], w + horizon))
    t = np.arange(w + horizon, dtype=float)
    done = False
    for r in rows:
        angle = 2 * np.pi * t / periods[r]
        design = np.column_stack([np.ones_like(t), t - w, np.cos(angle), np.sin(angle)])
        known = ~np.isnan(x[r])
        if known.sum() < 2 * design.shape[1]:
            continue
        coef, *_ = np.linalg.lstsq(design[:w][known], x[r][known], rcond=None)
        out[r] = design[:, 2:] @ coef[2:]
        done = True
    return out if done else None


def _natural(log_values: FloatArray) -> FloatArray:
    """Back from log space, clipped to each metric's domain (last axis is the metric)."""
    out = np.exp(log_values)
    out[..., CPC] = np.maximum(out[..., CPC], 1e-9)
    out[..., CVR] = np.clip(out[..., CVR], 0.0, 1.0)
    out[..., VOLUME] = np.maximum(out[..., VOLUME], 0.0)
    return out


def _last_valid(x: FloatArray) -> FloatArray:
    """Last non-NaN value of each row (NaN if none)."""
    valid = ~np.isnan(x)
    idx = x.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
    out = x[np.arange(x.shape[0]), idx]
    return np.where(valid.any(axis=1), out, np.nan)


def _row_median(a: FloatArray) -> FloatArray:
    """Median of each row ignoring NaN; NaN for an empty row (without numpy's all-NaN warning)."""
    n = (~np.isnan(a)).sum(axis=1)
    ordered = np.sort(a, axis=1)  # NaN sorts last
    rows = np.arange(a.shape[0])
    mid = (ordered[rows, np.maximum((n - 1) // 2, 0)] + ordered[rows, np.maximum(n // 2, 0)]) / 2
    return np.where(n > 0, mid, np.nan)


def _robust_scale(d: FloatArray) -> FloatArray:
    """Robust standard deviation of each row of changes (scaled MAD), as a column; inf when unknown."""
    scale = 1.4826 * _row_median(np.abs(d - _row_median(d)[:, None]))
    return np.where(np.isnan(scale), np.inf, np.maximum(scale, _MIN_LOG_STEP))[:, None]


def _despike(x: FloatArray, k: float = _OUTLIER_SIGMAS) -> FloatArray:
    """Replace isolated one-tick spikes (out and straight back) by their neighbours' mean.

    A jump that persists is a level shift, not a spike, and is left for the fit to follow.
    """
    if x.shape[1] < 4:
        return x
    d = np.diff(x, axis=1)  # d[:, i] = x[:, i+1] - x[:, i]
    scale = _robust_scale(d)
    up_, down = d[:, :-1], d[:, 1:]  # into and out of x[:, 1:-1]
    with np.errstate(invalid="ignore"):
        spike = (
            (np.abs(up_) > k * scale)
            & (np.abs(down) > k * scale)
            & (np.sign(up_) != np.sign(down))
            & (np.abs(up_ + down) < 0.25 * np.minimum(np.abs(up_), np.abs(down)))
        )
    if not spike.any():
        return x
    out = x.copy()
    mid = (x[:, :-2] + x[:, 2:]) / 2
    out[:, 1:-1] = np.where(spike, mid, x[:, 1:-1])
    return out


def _after_shift(x: FloatArray, k: float = _OUTLIER_SIGMAS) -> FloatArray:
    """Drop what came before the most recent level shift, so that the fit describes the new regime.

    A shift is a one-tick change more than ``k`` robust standard deviations away from the typical
    change of the window.
    """
    if x.shape[1] < 4:
        return x
    d = np.diff(x, axis=1)
    dev = np.abs(d - _row_median(d)[:, None])
    scale = _robust_scale(d)
    with np.errstate(invalid="ignore"):
        jump = dev > k * scale
    if not jump.any():
        return x
    # Index (in x) of the first tick of the newest regime; 0 where there was no shift.
    newest = np.where(jump.any(axis=1), d.shape[1] - np.argmax(jump[:, ::-1], axis=1), 0)
    out = x.copy()
    out[np.arange(x.shape[1])[None, :] < newest[:, None]] = np.nan
    return out


class _Fit(NamedTuple):
    """OLS line with AR(1) residuals fitted to each row; see :func:`_fit`."""

    n: FloatArray  # observations
    t_bar: FloatArray
    x_bar: FloatArray
    slope: FloatArray  # shrunk by its t-statistic
    phi: FloatArray
    sd: FloatArray  # innovation sd: the one-step forecast error


def _fit(x: FloatArray) -> _Fit:
    mask = ~np.isnan(x)
    n = mask.sum(axis=1)
    xz = np.where(mask, x, 0.0)
    t = np.arange(x.shape[1], dtype=float)
    safe_n = np.maximum(n, 1)
    t_bar = (mask * t).sum(axis=1) / safe_n
    x_bar = xz.sum(axis=1) / safe_n
    dt = np.where(mask, t - t_bar[:, None], 0.0)
    sxx = (dt * dt).sum(axis=1)
    slope = np.where(sxx > 0, (dt * xz).sum(axis=1) / np.where(sxx > 0, sxx, 1.0), 0.0)
    resid = np.where(mask, xz - x_bar[:, None] - slope[:, None] * dt, 0.0)

    # AR(1) coefficient of the residuals, over consecutive pairs that are both present.
    pair = mask[:, 1:] & mask[:, :-1]
    n_pairs = pair.sum(axis=1)
    prev, cur = resid[:, :-1] * pair, resid[:, 1:] * pair
    den = (prev * prev).sum(axis=1)
    phi = np.where(den > 1e-18, (prev * cur).sum(axis=1) / np.where(den > 1e-18, den, 1.0), 0.0)
    # Least squares underestimates phi in a short window (Kendall's bias, about (1 + 3 phi) / n).
    phi = phi + (1 + 3 * phi) / np.maximum(n_pairs, 1)
    phi = np.clip(np.where(n_pairs >= 3, phi, 0.0), _PHI_MIN, _MAX_PHI)
    innov = (cur - phi[:, None] * prev) * pair
    sd = np.sqrt((innov * innov).sum(axis=1) / np.maximum(n_pairs - 2, 1))
    resid_var = (resid * resid).sum(axis=1) / np.maximum(n - 2, 1)

    # Shrink the slope by its t-statistic, the standard error widened for autocorrelated residuals.
    se = np.sqrt(resid_var / np.where(sxx > 0, sxx, 1.0) * (1 + phi) / (1 - phi))
    t2 = (slope / np.where(se > 0, se, 1.0)) ** 2
    damp = np.where(se > 0, t2 / (t2 + SHRINK), 1.0)
    return _Fit(n.astype(float), t_bar, x_bar, np.where(sxx > 0, slope * damp, 0.0), phi, sd)


def _trend_ar1(x: FloatArray, horizon: int, min_obs: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Log-space forecasts (rows, horizon), one-step error sd (rows,) and observation count (rows,)."""
    rows, w = x.shape
    fit = _fit(x)
    mask = ~np.isnan(x)
    last = w - 1 - np.argmax(mask[:, ::-1], axis=1)
    x_last = x[np.arange(rows), last]
    # The last residual (from the shrunk line) decays with phi: after a jump, start from the new value.
    e_last = x_last - (fit.x_bar + fit.slope * (last - fit.t_bar))
    h = np.arange(1, horizon + 1, dtype=float)
    gap = (w - 1 - last)[:, None] + h  # ticks from the last observation to each target
    fc = (
        fit.x_bar[:, None]
        + fit.slope[:, None] * (w - 1 + h - fit.t_bar[:, None])
        + fit.phi[:, None] ** gap * e_last[:, None]
    )
    # Never extrapolate far outside what the window has seen.
    lo, hi = np.where(mask, x, np.inf).min(axis=1), np.where(mask, x, -np.inf).max(axis=1)
    reach = np.abs(fit.slope)[:, None] * gap + 3 * fit.sd[:, None] * np.sqrt(gap)
    fc = np.clip(fc, lo[:, None] - reach, hi[:, None] + reach)

    short = fit.n < min_obs
    fc = np.where(short[:, None], x_last[:, None], fc)
    sd = np.where(short, _PRIOR_LOG_SD, fit.sd)
    fc[fit.n == 0] = np.nan
    return fc, sd, fit.n


@dataclass(frozen=True)
class ForecastError:
    """Mean absolute percentage error of each metric, for the model and the naive last value."""

    model: dict[str, float]
    naive: dict[str, float]
    points: dict[str, int]


def forecast_error(series: ArrayLike, *, start: int = 10, window: int = 30, min_obs: int = 5) -> ForecastError:
    """Backtest one-step forecasts over ``series`` (platforms, ticks, 3): MAPE per metric.

    For every tick from ``start`` on, the forecast made from the ticks before it is compared with
    what happened. A tick with zero volume has no percentage error and is left out for volume;
    during an outage the model forecasts zero volume, as does the naive forecast.
    """
    data = np.asarray(series, dtype=float)
    n_ticks = data.shape[1]
    abs_err = {m: [0.0, 0.0] for m in METRICS}
    points = dict.fromkeys(METRICS, 0)
    for t in range(max(start, 1), n_ticks):
        arr = forecast_arrays(data[:, max(0, t - window) : t], window=window, min_obs=min_obs)
        model = _natural(arr.ahead[:, 0])
        model[:, VOLUME] = np.where(arr.up, model[:, VOLUME], 0.0)
        naive = data[:, t - 1]
        actual = data[:, t]
        for m, name in enumerate(METRICS):
            ok = (actual[:, m] > 0) & ~np.isnan(model[:, m]) & ~np.isnan(naive[:, m])
            if not ok.any():
                continue
            abs_err[name][0] += float((np.abs(model[ok, m] - actual[ok, m]) / actual[ok, m]).sum())
            abs_err[name][1] += float((np.abs(naive[ok, m] - actual[ok, m]) / actual[ok, m]).sum())
            points[name] += int(ok.sum())
    model_mape = {m: abs_err[m][0] / points[m] if points[m] else math.nan for m in METRICS}
    naive_mape = {m: abs_err[m][1] / points[m] if points[m] else math.nan for m in METRICS}
    return ForecastError(model_mape, naive_mape, points)
