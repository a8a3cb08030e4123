"""Whether a platform's volume has a cycle, and its period, learnt from what the feed has published.

A feed has no length and nobody tells the engine how long a day of its platforms is, so the period
of the volume's cycle is found in the data: a scan over candidate periods of a harmonic regression
against a line, both with autocorrelated errors, and an F test of the harmonic.

* **The model.** ``log v = c + d t + a cos(2 pi t / P) + b sin(2 pi t / P) + AR(3) noise`` against
  the same without the harmonic. Consecutive ticks are far from independent, so both are fitted by
  generalised least squares, prewhitened with the AR coefficients (Yule-Walker) of the harmonic
  fit's residuals; ordinary least squares would find "significant" cycles in every slow wander, and
  an AR(1) leaves enough of a shock's slow decay in the noise to find them still. The line keeps a
  trend from passing for a long cycle.
* **The test.** The F statistic of ``(a, b)``, ``F(2, n - 7)``, with its p-value Bonferroni-corrected
  for the grid scanned. A candidate also needs ``min_cycles`` cycles seen (with less than that a
  cycle and a trend or a decaying shock fit alike, and extrapolating it goes wild), must not be the
  longest the history allows (a partly seen cycle fits any period near it) and needs an amplitude
  worth planning by. Nothing passes: no cycle, which is the persistence forecast, so a market
  without a cycle is planned as before.
* **Hints.** Periods a user or a calendar suggests are tested on their own, at ``alpha`` without
  the correction, from a quarter of a cycle seen; a hint that passes is taken when the scan finds
  nothing (which it cannot while less than 1.5 cycles of a long period have been seen) and none of
  its fractions (a half to an eighth of it) fits a thousand times better.
* **Bounded cost.** Candidates run on a geometric grid (4% apart, then refined around the best to
  the tick, or to 25 periods between its neighbours). A period is scanned on at most
  ``MAX_POINTS`` points: the ticks themselves, or past that block means of the log volume (blocks
  of a power of 16 ticks, over the last ``SCAN_CYCLES`` cycles), so a scan costs the same on a
  week of 2-second ticks as on an hour of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from common.forecast.season import PlatformCycle, fit_cycle
from common.models import FloatArray

MIN_PERIOD = 4
MAX_POINTS = 2048  # points per scan: ticks, or block means of a long history
MIN_CYCLES = 1.5
HINT_CYCLES = 0.25
MAX_AMPLITUDE = 1.5
FIT_CYCLES = 4  # the harmonic is fitted to at most this many of the newest cycles
SCAN_CYCLES = 16  # a period is scanned on at most this many of the newest cycles, at least MAX_POINTS ticks
ALPHA = 1e-4
HINT_ALPHA = 1e-4
HINT_FRACTIONS = 8  # a hint competes with its half, third, ... eighth
HINT_MARGIN = math.log(1e3)  # natural log of how much smaller a fraction's p-value must be to beat it
# Log units. Slow shocks and wanders leave spurious "cycles" of 0.05-0.12 that pass the test in
# markets without one; a cycle that small moves a plan by little.
MIN_AMPLITUDE = 0.1
_GRID = 1.04
_FINE = 25
_BLOCK_BASE = 16
AR_ORDER = 3


@dataclass(frozen=True, slots=True)
class Detected:
    """A cycle found: its ``period`` in ticks, the ``amplitude`` of its harmonic in log units and the
    evidence for it, ``-log10`` of its (corrected) p-value."""

    period: int
    amplitude: float
    evidence: float


@dataclass(frozen=True, slots=True)
class _Scan:
    periods: FloatArray
    log_p: FloatArray  # natural log of each candidate's p-value
    amplitude: FloatArray


def detect(
    volume: Sequence[float] | FloatArray,
    *,
    hints: Iterable[int] = (),
    min_period: int = MIN_PERIOD,
    alpha: float = ALPHA,
    min_cycles: float = MIN_CYCLES,
    min_amplitude: float = MIN_AMPLITUDE,
    hint_cycles: float = HINT_CYCLES,
    hint_alpha: float = HINT_ALPHA,
) -> Detected | None:
    """The cycle of ``volume`` (consecutive ticks, oldest first; zero or NaN where unknown), or None."""
    log_v = _log_volume(volume)
    n = log_v.size
    if int(np.isfinite(log_v).sum()) < 4 * min_period:
        return None
    # A period the scan pins down beats a hint seen in part: with half of a two-day cycle seen, a
    # hint of the whole flight passes its test too, until the day shows itself.
    scanned = _scan_grid(log_v, min_period, n / min_cycles, alpha, min_amplitude)
    if scanned is not None:
        return scanned
    found: list[Detected] = []
    for period in sorted({int(h) for h in hints if min_period <= int(h) <= n / hint_cycles}):
        scan = _scan_periods(log_v, np.array([float(period)]))
        if scan is None or not _plausible(scan.amplitude[0], min_amplitude) or scan.log_p[0] >= math.log(hint_alpha):
            continue
        log_p = float(scan.log_p[0])
        if _fraction_fits_better(log_v, period, min_period, log_p):
            continue
        found.append(Detected(period, float(scan.amplitude[0]), -log_p / math.log(10)))
    return max(found, key=lambda d: d.evidence) if found else None


def _fraction_fits_better(log_v: FloatArray, period: int, min_period: int, log_p: float) -> bool:
    """Whether a fraction of ``period`` (a half to an eighth) fits ``HINT_MARGIN`` better than its log p-value.

    A hint is a calendar's period (a day, a week, the simulated market's length) and the market's
    cycle may be a fraction of it (a day in a week). Seen in part, the hint's harmonic with a line
    bends along a cycle or two of a fraction too: a fraction that fits far better rules it out.
    """
    fractions = [period / k for k in range(2, HINT_FRACTIONS + 1) if period / k >= min_period]
    scan = _scan_periods(log_v, np.array(fractions)) if fractions else None
    return scan is not None and float(scan.log_p.min()) < log_p - HINT_MARGIN


def learn(volume: Sequence[float] | FloatArray, first_tick: int, *, hints: Iterable[int] = ()) -> PlatformCycle | None:
    """The cycle of ``volume`` (ticks ``first_tick``, ``first_tick + 1``, ...): the period
    :func:`detect` finds and the harmonic :func:`~common.forecast.season.fit_cycle` fits to the last
    ``FIT_CYCLES`` cycles of it (as block means past ``MAX_POINTS`` ticks); None for no cycle."""
    log_v = _log_volume(volume)
    seen = np.flatnonzero(np.isfinite(log_v))
    if seen.size == 0:
        return None
    # Ticks before the feed's first are no evidence of anything: the scan starts at the first.
    first_tick, log_v = first_tick + int(seen[0]), log_v[int(seen[0]) :]
    found = detect(np.exp(log_v), hints=hints)
    if found is None:
        return None
    window = min(log_v.size, FIT_CYCLES * found.period)
    size = 1
    while window / size > MAX_POINTS:
        size *= _BLOCK_BASE
    means, centres = blocks(log_v[log_v.size - window :], size)
    start = first_tick + log_v.size - window + float(centres[0])
    coef = fit_cycle(np.exp(means), start, found.period, step=size)
    return None if coef is None else PlatformCycle(found.period, *coef)


def _plausible(amplitude: float | FloatArray, min_amplitude: float) -> bool | np.ndarray:
    # Past MAX_AMPLITUDE a harmonic extrapolates a fraction of a cycle into a wild swing.
    return (amplitude >= min_amplitude) & (amplitude <= MAX_AMPLITUDE)  # type: ignore[no-any-return]


def _scan_grid(log_v: FloatArray, min_period: int, top: float, alpha: float, min_amplitude: float) -> Detected | None:
    """The best period of the grid up to ``top`` that passes the corrected test, or None."""
    if top < min_period:
        return None
    grid = np.unique(np.round(min_period * _GRID ** np.arange(math.ceil(math.log(top / min_period, _GRID)) + 1)))
    grid = grid[grid <= top]
    scan = _scan_periods(log_v, grid)
    if scan is None:
        return None
    # Around the best candidate, whole periods between its grid neighbours, at most _FINE of them
    # (every one of a day of 2-second ticks' 3,000 would cost more than the whole grid).
    best = float(scan.periods[int(np.argmin(scan.log_p))])
    fine = np.unique(np.round(np.linspace(best / _GRID, best * _GRID, _FINE)))
    fine = fine[(fine >= min_period) & (fine <= top)]
    refined = _scan_periods(log_v, fine) if fine.size else None
    if refined is not None:
        scan = refined
    # Bonferroni over the grid scanned (the refinement looks at neighbours of one candidate).
    log_p = scan.log_p + math.log(grid.size)
    ok = _plausible(scan.amplitude, min_amplitude) & (log_p < math.log(alpha))
    if not np.any(ok):
        return None
    i = int(np.argmin(np.where(ok, log_p, np.inf)))
    if scan.periods[i] * _GRID**2 > top:
        # Best at the edge of what can be seen: a longer period, or a trend, would fit as well.
        return None
    return Detected(int(scan.periods[i]), float(scan.amplitude[i]), -float(log_p[i]) / math.log(10))


def _log_volume(volume: Sequence[float] | FloatArray) -> FloatArray:
    v = np.asarray(volume, dtype=float)
    out = np.full(v.shape, np.nan)
    seen = np.isfinite(v) & (v > 0)
    out[seen] = np.log(v[seen])
    return out


def block_size(period: float, ticks: int) -> int:
    """Ticks per point when scanning ``period`` in ``ticks`` of history: the smallest power of 16
    that puts the last ``SCAN_CYCLES`` cycles (or all the history, if shorter) in ``MAX_POINTS``."""
    size = 1
    while min(ticks, SCAN_CYCLES * period) / size > MAX_POINTS:
        size *= _BLOCK_BASE
    return size


def blocks(log_v: FloatArray, size: int, points: int = MAX_POINTS) -> tuple[FloatArray, FloatArray]:
    """Means of the last ``points`` whole blocks of ``size`` ticks, ending at the newest tick, and the
    position of each block's centre (ticks from the first of ``log_v``); NaN for a block of no data."""
    count = min(log_v.size // size, points)
    tail = log_v[log_v.size - count * size :].reshape(count, size)
    seen = np.isfinite(tail)
    total = np.where(seen, tail, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore"):
        means = total / seen.sum(axis=1)
    centres = log_v.size - count * size + np.arange(count, dtype=float) * size + (size - 1) / 2
    return np.asarray(means, dtype=float), centres


def _scan_periods(log_v: FloatArray, periods: FloatArray) -> _Scan | None:
    """The F test of each period against a line, grouped by block size; None if nothing was testable."""
    sizes = np.array([block_size(p, log_v.size) for p in periods])
    out_p, out_lp, out_amp = [], [], []
    for size in np.unique(sizes):
        group = periods[sizes == size]
        z, t = blocks(log_v, int(size))
        seen = np.isfinite(z)
        if int(seen.sum()) < 12:
            continue
        log_p, amplitude = _f_test(z[seen], t[seen], group)
        # Block means shrink a harmonic by sinc(pi size / period): measure the ticks' amplitude.
        amplitude = amplitude / np.sinc(size / group)
        out_p.append(group)
        out_lp.append(log_p)
        out_amp.append(amplitude)
    if not out_p:
        return None
    return _Scan(np.concatenate(out_p), np.concatenate(out_lp), np.concatenate(out_amp))


def _f_test(z: FloatArray, t: FloatArray, periods: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Log p-value of the harmonic of each period (rows) and its amplitude, by prewhitened GLS."""
    n = z.size
    span = max(float(t[-1] - t[0]), 1.0)
    angle = 2 * math.pi * t[None, :] / periods[:, None]
    x = np.empty((periods.size, n, 4))
    x[:, :, 0] = 1.0
    x[:, :, 1] = ((t - t[0]) / span)[None, :]
    x[:, :, 2] = np.cos(angle)
    x[:, :, 3] = np.sin(angle)
    y = np.broadcast_to(z, (periods.size, n))
    # The AR coefficients of each harmonic fit's residuals (OLS first, Yule-Walker): shocks that
    # decay slowly leave more than an AR(1) in the noise, and what prewhitening leaves inflates F.
    resid = y - _fitted(x, _solve(x, y))
    phi = _yule_walker(resid, AR_ORDER)
    ys, xs = y[:, AR_ORDER:].copy(), x[:, AR_ORDER:].copy()
    for lag in range(1, AR_ORDER + 1):
        ys -= phi[:, lag - 1, None] * y[:, AR_ORDER - lag : n - lag]
        xs -= phi[:, lag - 1, None, None] * x[:, AR_ORDER - lag : n - lag]
    rss1, coef1 = _rss(xs, ys)
    rss0, _ = _rss(xs[:, :, :2], ys)
    dof = n - AR_ORDER - 4
    f = np.maximum(rss0 - rss1, 0.0) / 2 / np.maximum(rss1 / max(dof, 1), 1e-300)
    # F(2, d) has the closed-form tail (1 + 2 F / d)^(-d / 2).
    log_p = -dof / 2 * np.log1p(2 * f / max(dof, 1))
    return log_p, np.hypot(coef1[:, 2], coef1[:, 3])


def _yule_walker(resid: FloatArray, order: int) -> FloatArray:
    """AR coefficients (rows, order) of each row, by Yule-Walker (always a stationary fit)."""
    n = resid.shape[1]
    acov = np.stack([(resid[:, lag:] * resid[:, : n - lag]).sum(axis=1) / n for lag in range(order + 1)], axis=1)
    lags = np.abs(np.arange(order)[:, None] - np.arange(order)[None, :])
    toeplitz = acov[:, lags] + 1e-12 * np.eye(order)
    return np.linalg.solve(toeplitz, acov[:, 1:, None])[:, :, 0]


def _solve(x: FloatArray, y: FloatArray) -> FloatArray:
    # Batched matmul, not einsum: BLAS does the (m, k, n) @ (m, n, k) products several times faster.
    xt = np.swapaxes(x, 1, 2)
    gram = xt @ x + 1e-9 * np.eye(x.shape[2])
    return np.asarray(np.linalg.solve(gram, xt @ y[:, :, None])[:, :, 0], dtype=float)


def _fitted(x: FloatArray, coef: FloatArray) -> FloatArray:
    return np.asarray((x @ coef[:, :, None])[:, :, 0], dtype=float)


def _rss(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    coef = _solve(x, y)
    resid = y - _fitted(x, coef)
    return (resid * resid).sum(axis=1), coef
