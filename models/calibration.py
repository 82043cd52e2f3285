"""Raw anomaly scores to calibrated scores whose thresholds are false-positive budgets.

The calibrated score of a window is ``1 - p``, where ``p`` estimates the share of ordinary windows
that score at least as high. Thresholds then read as budgets: ``score >= 0.999`` is "top 0.1%".

Estimating ``p`` from the plain empirical tail has a flaw that matters here: a large campaign
*is* the top of the distribution, so the top 0.1% would be spent on it and the threshold would
rise until part of the campaign looked normal. Instead the tail is extrapolated from the body,
which ordinary traffic dominates: the scores at two anchor quantiles (by default the median and
the 95th percentile) fix a normal (probit) tail, ``z(s) = z95 + (s - q95) * (z95 - z50) / (q95 -
q50)``, and beyond the upper anchor ``p = 1 - Phi(z(s))``. A campaign can then be a few percent
of all windows without moving the thresholds it is measured against. Below the upper anchor the
empirical share is used as it is.

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
    >>> cal.update(np.full(1_000, 0.9))                    # a 2% campaign, all scoring 0.9
    >>> p = 1 - cal.calibrate(np.array([0.2, 0.5, 0.9]))
    >>> [f"{x:.1e}" for x in p]
    ['4.5e-01', '3.4e-02', '1.7e-05']

    The campaign's windows stay far out (an empirical tail would have said 2%, i.e. ordinary).
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
