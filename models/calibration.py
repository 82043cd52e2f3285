"""Raw anomaly scores to calibrated scores whose thresholds are false-positive budgets.

The calibrated score of a window is ``1 - p``, where ``p`` estimates the share of ordinary windows
that score at least as high. Thresholds then read as budgets: ``score >= 0.999`` is "top 0.1%".

Two things keep the estimate honest. First, a large campaign *is* the top of the distribution:
if its windows were counted, the top 0.1% would be spent on it and the threshold would rise until
part of the campaign looked normal, so `models.detector` feeds the calibrator only windows that
did not strike. Second, budgets like 0.005% lie beyond what a histogram can resolve, so past the
upper anchor quantile the tail is extrapolated: the scores at two anchors (by default the 90th
and 99th percentiles) fix a normal (probit) tail, ``z(s) = z99 + (s - q99) * (z99 - z90) /
(q99 - q90)``, and ``p = 1 - Phi(z(s))``. Below the upper anchor the empirical share is used.

The distribution is a histogram with exponential forgetting, so it follows the daily cycle and
slow growth; `TailCalibrator.forget` lets the detector forget faster when ADWIN sees the
population's scores shift (a new model release, a gateway change).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = ["TailCalibrator"]

_Z = NormalDist()

F64 = npt.NDArray[np.float64]


class TailCalibrator:
    """Online calibration of scores in [0, 1] to an estimated exceedance probability.

    Parameters
    ----------
    bins
        Histogram resolution over [0, 1].
    half_life
        Observations after which an old observation weighs half as much.
    anchors
        The two body quantiles (as exceedance probabilities) the tail is extrapolated from.
    min_count
        Observations needed before `ready` is true (no enforcement on a cold calibrator).
    floor
        Smallest probability reported.
    min_spread
        Smallest distance between the anchor quantiles used for the tail slope, so a population
        whose body is nearly constant does not make every slightly higher score extreme.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cal = TailCalibrator(min_count=1000)
    >>> cal.update(rng.beta(2, 8, size=50_000))           # ordinary windows
    >>> p = 1 - cal.calibrate(np.array([0.2, 0.5, 0.7, 0.9]))
    >>> [f"{x:.1e}" for x in p]
    ['4.4e-01', '2.0e-02', '6.1e-04', '5.3e-06']

    Up to the 99th percentile the shares are empirical (Beta(2, 8) exceeds 0.5 with probability
    0.020); beyond it the normal tail takes over, where a histogram has too few windows to say.
    The detector feeds it only windows that did not strike, so a campaign stays out of it.
    """

    def __init__(
        self,
        bins: int = 4096,
        half_life: float = 500_000.0,
        anchors: tuple[float, float] = (0.1, 0.01),
        min_count: int = 2_000,
        floor: float = 1e-10,
        min_spread: float = 0.02,
    ) -> None:
        if not 1 > anchors[0] > anchors[1] > 0:
            raise ValueError("anchors must be exceedance probabilities with 1 > a0 > a1 > 0")
        self.bins = bins
        self.half_life = half_life
        self.anchors = anchors
        self.min_count = min_count
        self.floor = floor
        self.min_spread = min_spread
        self.hist = np.zeros(bins, dtype=np.float64)
        self.seen = 0

    @property
    def ready(self) -> bool:
        return self.seen >= self.min_count

    def _bin(self, scores: F64) -> npt.NDArray[np.intp]:
        return np.clip((scores * self.bins).astype(np.intp), 0, self.bins - 1)

    def update(self, scores: F64) -> None:
        """Add a batch of raw scores (forgetting older ones by ``half_life``)."""
        if scores.size == 0:
            return
        self.hist *= 0.5 ** (scores.size / self.half_life)
        self.hist += np.bincount(self._bin(scores), minlength=self.bins)
        self.seen += int(scores.size)

    def forget(self, keep: float) -> None:
        """Scale all history by ``keep`` (0..1), e.g. after a detected population shift."""
        self.hist *= keep

    def quantile(self, exceedance: float) -> float:
        """The score exceeded by a share ``exceedance`` of the (weighted) history."""
        total = self.hist.sum()
        if total <= 0:
            return 1.0
        survival = 1.0 - np.cumsum(self.hist) / total
        idx = int(np.searchsorted(-survival, -exceedance, side="left"))
        return min(idx + 1, self.bins) / self.bins

    def calibrate(self, scores: F64) -> F64:
        """Calibrated scores ``1 - p`` for a batch of raw scores."""
        total = self.hist.sum()
        if total <= 0:
            return np.zeros_like(scores)
        # Survival at the *upper* edge of each bin: p(score >= s) counting s's own bin.
        survival_from = np.cumsum(self.hist[::-1])[::-1] / total
        p = survival_from[self._bin(scores)]
        lo_p, hi_p = self.anchors
        q_lo, q_hi = self.quantile(lo_p), self.quantile(hi_p)
        z_lo, z_hi = _Z.inv_cdf(1.0 - lo_p), _Z.inv_cdf(1.0 - hi_p)
        slope = (z_hi - z_lo) / max(q_hi - q_lo, self.min_spread)
        tail = np.flatnonzero(scores > q_hi)
        if tail.size:
            z = z_hi + slope * (scores[tail] - q_hi)
            p[tail] = [0.5 * math.erfc(v / math.sqrt(2.0)) for v in z.tolist()]
        result: F64 = 1.0 - np.clip(p, self.floor, 1.0)
        return result
