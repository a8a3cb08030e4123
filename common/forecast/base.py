"""Where a platform's figures go over the rest of a flight: a long-run base, and how much of today's
deviation from it lasts.

The one-tick forecast says where CPC, CVR and volume are now; the pacing needs where they will be
over the rest of the flight, and holding them at now is wrong both ways: a price shock decays back
over tens of ticks (the plan then spends least in a cheap spell, exactly when the hindsight optimum
buys most), while a trend does not come back at all. So each metric's log series is modelled as

    x(t + h) = base(t + h) + d * (p + (1 - p) * RHO^h),     d = x(t) - base(t)

where ``base`` is a level and the platform's cycle fitted to the last ``HISTORY_TICKS`` ticks, and
``p``, the share of a deviation that persists, is learnt from the same history by the error of
that very forecast: for every tick of the history, the deviation from the mean of the ticks before
it, and what it became ``HORIZONS`` ticks later, with the reversion ``1 - p`` shrunk by its
t-statistic (a few long swings of a wandering series are no evidence that it comes back). A market
whose deviations come back gets ``p`` well below 1; one that trends or wanders gets ``p`` near 1,
which is the plan of holding today's figures. The mean the learning measures against is causal
(an expanding mean), so a trend is not hidden by a level fitted through it. A market's platforms
learn ``p`` together (:func:`pooled`): each keeps its own estimate's difference from their common
one, so a few hundred ticks of several platforms that share a kind of shock are evidence where one
platform's alone is not.

A cycle is fitted to CPC and CVR only where the history holds one whole period; volume, whose
cycle is learnt from the long volume history (:mod:`common.forecast.detect`), keeps that harmonic
and fits only its level here.

:class:`PathOutlook` is the rest of the flight seen from one tick, for the pacing: the volume of the
coming ticks in units of the next tick's, and the volume-weighted change of log CPC and log CVR,
as cumulative sums that are read between any two horizons.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from common.models import FloatArray

HISTORY_TICKS = 720  # the feed's ticks the base is fitted to
RHO = 0.95  # per tick, the decay of the part of a deviation that does not persist
HORIZONS = (8, 32, 96)  # ticks ahead at which the persistence is learnt
MIN_OBSERVATIONS = 40
_WARM_UP = 30  # ticks of history before the learning's expanding mean counts
_POOLED_TICKS = max(HORIZONS) + _WARM_UP + 10  # an estimate from a shorter history is not pooled
SHRINK = 16.0  # an estimate kept is t^2 / (t^2 + this) of the fitted one (half at |t| = 4): reversions, slopes
NEAR_TICKS = 64  # past this the transient part is spent (RHO^64 = 0.04): the path repeats with the cycle
_POINTS = 32  # marks per period past NEAR_TICKS
_FINE_MARKS = (0, 1, 2, 4, 8, 16, 32, NEAR_TICKS)
_MEMO_SIZE = 4096  # flight ends remembered per path


class MetricBase(NamedTuple):
    """One metric's base in log units, ``level + a cos(wt) + b sin(wt)``, and its ``persistence``;
    ``reversion`` and ``variance`` are the platform's own estimate of ``1 - persistence`` before
    shrinking, and its variance (infinite where there is none)."""

    level: float
    a: float
    b: float
    persistence: float
    reversion: float = 0.0
    variance: float = math.inf


@dataclass(frozen=True, slots=True)
class PlatformBase:
    """The base of CPC, CVR and volume (in that order) of one platform; ``period`` 0 for no cycle."""

    period: int
    metrics: tuple[MetricBase, MetricBase, MetricBase]

    def at(self, ticks: FloatArray) -> FloatArray:
        """Log base of each metric at ``ticks``: shape (3, len(ticks))."""
        level = np.array([m.level for m in self.metrics])[:, None]
        if self.period < 2:
            return np.broadcast_to(level, (3, ticks.size)).copy()
        angle = 2 * math.pi * ticks / self.period
        a = np.array([m.a for m in self.metrics])[:, None]
        b = np.array([m.b for m in self.metrics])[:, None]
        out: FloatArray = level + a * np.cos(angle)[None, :] + b * np.sin(angle)[None, :]
        return out

    def to_dict(self) -> dict[str, Any]:
        rows = [[*m[:5], m.variance if math.isfinite(m.variance) else None] for m in self.metrics]
        return {"period": self.period, "metrics": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlatformBase:
        rows = [_metric(row) for row in data["metrics"]]
        if len(rows) != 3:
            raise ValueError("base: three metrics expected")
        return cls(int(data["period"]), (rows[0], rows[1], rows[2]))


def _metric(row: Sequence[Any]) -> MetricBase:
    """A :class:`MetricBase` from its stored row: four figures, or six with the platform's own
    estimate (a variance of null is infinite)."""
    if len(row) not in (4, 6):
        raise ValueError("base: a metric has four figures, or six with its own estimate")
    level, a, b, persistence, *estimate = row
    reversion, variance = estimate or (0.0, None)
    return MetricBase(
        float(level),
        float(a),
        float(b),
        float(persistence),
        float(reversion),
        math.inf if variance is None else float(variance),
    )


def fit_base(
    history: FloatArray, first_tick: int, period: int, volume_cycle: tuple[float, float] | None
) -> PlatformBase | None:
    """The base of ``history`` (ticks, 3) in natural units, ticks ``first_tick``, ``first_tick + 1``, ...

    ``period`` is the platform's cycle (0: none) and ``volume_cycle`` its volume harmonic. None with
    fewer than ``MIN_OBSERVATIONS`` ticks of volume.
    """
    data = np.asarray(history, dtype=float)
    ticks = first_tick + np.arange(data.shape[0], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(data > 0, np.log(data), np.nan)
    if int(np.isfinite(logs[:, 2]).sum()) < MIN_OBSERVATIONS:
        return None
    span = ticks[-1] - ticks[0] + 1
    angle = 2 * math.pi * ticks / period if period >= 2 else np.zeros_like(ticks)
    metrics = []
    for m in range(3):
        y = logs[:, m]
        if m == 2 and volume_cycle is not None and period >= 2:
            a, b = volume_cycle
        elif m < 2 and period >= 2 and span >= period:
            a, b = _harmonic(y, ticks, period)
        else:
            a = b = 0.0
        rest = y - a * np.cos(angle) - b * np.sin(angle)
        known = np.isfinite(rest)
        if int(known.sum()) < MIN_OBSERVATIONS:
            metrics.append(MetricBase(0.0, 0.0, 0.0, 1.0))
            continue
        reversion, variance = _reversion(rest)
        level, kept = float(rest[known].mean()), _shrunk(reversion, variance)
        if rest.size > _POOLED_TICKS:
            metrics.append(MetricBase(level, float(a), float(b), 1 - kept, reversion, variance))
        else:  # too short for every horizon: its own, not pooled (MetricBase's default: no estimate)
            metrics.append(MetricBase(level, float(a), float(b), 1 - kept))
    return PlatformBase(period if period >= 2 else 0, (metrics[0], metrics[1], metrics[2]))


def _harmonic(y: FloatArray, ticks: FloatArray, period: int) -> tuple[float, float]:
    known = np.isfinite(y)
    angle = 2 * math.pi * ticks[known] / period
    design = np.column_stack([np.ones_like(angle), np.cos(angle), np.sin(angle)])
    coef, *_ = np.linalg.lstsq(design, y[known], rcond=None)
    return float(coef[1]), float(coef[2])


def _reversion(rest: FloatArray) -> tuple[float, float]:
    """The share ``1 - p`` of a deviation that comes back, by least squares over the history's own
    forecasts, and the variance of that estimate; (0, inf) where the history says nothing."""
    known = np.isfinite(rest)
    total = np.cumsum(np.where(known, rest, 0.0))
    count = np.cumsum(known)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    pairs = []
    for h in HORIZONS:
        if rest.size <= h + _WARM_UP + 10:
            continue
        t0 = np.arange(_WARM_UP, rest.size - h)
        d = rest[t0] - mean[t0]
        fades = RHO**h
        regressor = d * (1 - fades)
        target = rest[t0 + h] - mean[t0] - d * fades
        ok = np.isfinite(regressor) & np.isfinite(target)
        pairs.append((h, regressor[ok], target[ok]))
    den = sum(float(x @ x) for _, x, _ in pairs)
    if not den > 0:
        return 0.0, math.inf
    p = sum(float(x @ y) for _, x, y in pairs) / den
    # The errors of forecasts h ticks ahead overlap h at a time: the variance of the estimate counts
    # each product h times (a Newey-West bound), so a few long swings are not taken for evidence.
    var = sum(h * float(((y - p * x) * x) @ ((y - p * x) * x)) for h, x, y in pairs) / den**2
    return 1 - p, var


def _keep(t2: float) -> float:
    """The share of an estimate kept, by its squared t-statistic: half at |t| = 4."""
    return t2 / (t2 + SHRINK) if math.isfinite(t2) else 1.0


def _shrunk(reversion: float, variance: float) -> float:
    """``reversion`` shrunk by its t-statistic (as the forecast's slope is), within [0, 1]."""
    if not math.isfinite(variance):
        return 0.0
    kept = reversion * _keep(reversion**2 / variance if variance > 0 else math.inf)
    return min(max(kept, 0.0), 1.0)


def pooled(bases: Mapping[str, PlatformBase | None]) -> dict[str, PlatformBase | None]:
    """``bases`` with each metric's persistence learnt from every platform's estimate together.

    A market's platforms tend to share how their figures move, and one platform's few hundred ticks
    are weak evidence on their own. So each metric's reversions are taken as drawn around a common
    one: their random-effects mean (DerSimonian-Laird), shrunk towards none by its own t-statistic;
    each platform then keeps its own estimate's difference from that, shrunk by that difference's
    t-statistic. Platforms that agree learn from one another; one that differs clearly keeps its
    own; a platform alone, or the only one with an estimate, keeps what it learnt by itself.
    """
    fitted = [b for b in bases.values() if b is not None]
    if len(fitted) < 2:
        return dict(bases)
    kept = [iter(_pool([b.metrics[m] for b in fitted])) for m in range(3)]
    out: dict[str, PlatformBase | None] = {}
    for pid, b in bases.items():
        if b is not None:
            cpc, cvr, volume = (b.metrics[m]._replace(persistence=1 - next(kept[m])) for m in range(3))
            b = PlatformBase(b.period, (cpc, cvr, volume))
        out[pid] = b
    return out


def _pool(metrics: Sequence[MetricBase]) -> list[float]:
    """The reversion each platform keeps of one metric, learnt together (:func:`pooled`)."""
    r = np.array([m.reversion for m in metrics])
    v = np.array([m.variance for m in metrics])
    known = np.isfinite(v) & (v > 0)
    n = int(known.sum())
    if n < 2:
        return [1 - m.persistence for m in metrics]
    r_known, v_known = r[known], v[known]
    w = 1 / v_known
    total = float(w.sum())
    q = float(w @ (r_known - float(w @ r_known) / total) ** 2)
    spread = max(0.0, (q - (n - 1)) / (total - float(w @ w) / total))
    wr = 1 / (v_known + spread)
    common = _shrunk(float(wr @ r_known) / float(wr.sum()), 1 / float(wr.sum()))
    out = []
    for m, ok in zip(metrics, known, strict=True):
        gap = m.reversion - common
        own = common + gap * _keep(gap**2 / m.variance) if ok else 1 - m.persistence
        out.append(min(max(own, 0.0), 1.0))
    return out


class Chunk(NamedTuple):
    """A stretch of the coming ticks: their volume in ticks of the next tick's, and the
    volume-weighted mean change of log CPC and log CVR from the next tick's forecast."""

    ticks: float
    log_cpc: float
    log_cvr: float


@dataclass(frozen=True, slots=True)
class PathOutlook:
    """The rest of a flight seen from one tick: cumulative sums over the next ``marks[i]`` ticks of
    the volume factor ``v(h)`` (1 at the next tick) and of ``v(h)`` times the change of log CPC and
    log CVR. Past the last mark the path repeats with ``period`` from ``NEAR_TICKS`` on, or (no
    cycle) goes on as over the last two marks."""

    period: int
    marks: tuple[int, ...]
    volume: tuple[float, ...]
    cpc: tuple[float, ...]
    cvr: tuple[float, ...]
    _memo: dict[tuple[tuple[int, ...], int], list[Chunk | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def cumulative(self, n: int) -> tuple[float, float, float]:
        if n <= 0:
            return 0.0, 0.0, 0.0
        last = self.marks[-1]
        if n > last:
            head, per = (NEAR_TICKS, self.period) if self.period else (self.marks[-2], last - self.marks[-2])
            laps, rest = divmod(n - head, per)
            at_head, at_end, at_rest = self.cumulative(head), self.cumulative(head + per), self.cumulative(head + rest)
            return tuple(r + laps * (e - h) for r, e, h in zip(at_rest, at_end, at_head, strict=True))  # type: ignore[return-value]
        i = bisect.bisect_right(self.marks, n) - 1
        values = (self.volume[i], self.cpc[i], self.cvr[i])
        if self.marks[i] == n:
            return values
        share = (n - self.marks[i]) / (self.marks[i + 1] - self.marks[i])
        nxt = (self.volume[i + 1], self.cpc[i + 1], self.cvr[i + 1])
        return tuple(v + (w - v) * share for v, w in zip(values, nxt, strict=True))  # type: ignore[return-value]

    def chunks(self, bounds: Sequence[int], end: int) -> list[Chunk | None]:
        """:meth:`chunk` between consecutive ``bounds`` below ``end``, then to ``end``: the plan of a
        flight with ``end`` ticks left. Memoised: a tick's campaigns share a few flight ends."""
        key = (tuple(bounds), end)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = _chunks(self, key[0], end)
        return found

    def chunk(self, start: int, end: int) -> Chunk | None:
        """Ticks ``start`` to ``end`` ahead (0 is the next tick); None if they hold no volume."""
        v0, c0, r0 = self.cumulative(start)
        v1, c1, r1 = self.cumulative(end)
        weight = v1 - v0
        if not weight > 1e-12:
            return None
        return Chunk(weight, (c1 - c0) / weight, (r1 - r0) / weight)

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "marks": list(self.marks),
            "volume": list(self.volume),
            "cpc": list(self.cpc),
            "cvr": list(self.cvr),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathOutlook:
        view = cls(
            int(data["period"]),
            tuple(int(x) for x in data["marks"]),
            tuple(float(x) for x in data["volume"]),
            tuple(float(x) for x in data["cpc"]),
            tuple(float(x) for x in data["cvr"]),
        )
        n = len(view.marks)
        if n < 3 or not (len(view.volume) == len(view.cpc) == len(view.cvr) == n):
            raise ValueError("path: marks and sums differ in length")
        return view


def _chunks(view: PathOutlook, bounds: tuple[int, ...], end: int) -> list[Chunk | None]:
    stops = [b for b in bounds if b < end] + [end]
    return [view.chunk(a, b) for a, b in itertools.pairwise(stops)]


def path(base: PlatformBase, now: Sequence[float], tick: int) -> PathOutlook:
    """The :class:`PathOutlook` from ``tick`` of a platform whose next tick is forecast at ``now``
    (CPC, CVR and volume in natural units, all > 0)."""
    period = base.period
    span = NEAR_TICKS + (period if period else NEAR_TICKS)
    step = max(1, math.ceil(period / _POINTS)) if period else NEAR_TICKS
    marks = [*_FINE_MARKS, *range(NEAR_TICKS + step, span, step), span]
    h = np.arange(span, dtype=float)
    based = base.at(tick + h)
    dev = np.log(np.asarray(now, dtype=float)) - based[:, 0]
    persist = np.array([m.persistence for m in base.metrics])
    lasting = persist[:, None] + (1 - persist[:, None]) * RHO ** np.minimum(h, NEAR_TICKS)[None, :]
    change = based - based[:, :1] + (lasting - 1) * dev[:, None]  # log x(t + h) - log x(t)
    volume = np.exp(change[2])
    weighted = np.vstack([volume, volume * change[0], volume * change[1]])
    sums = np.concatenate([np.zeros((3, 1)), np.cumsum(weighted, axis=1)], axis=1)
    return PathOutlook(
        period,
        tuple(marks),
        tuple(float(sums[0, m]) for m in marks),
        tuple(float(sums[1, m]) for m in marks),
        tuple(float(sums[2, m]) for m in marks),
    )
