"""Raw risk to calibrated scores whose thresholds are false-positive budgets.

The calibrated score of a window is ``1 - p``, where ``p`` is the conformal p-value of its raw risk
against *reference* windows (what the detector treats as ordinary, see `models.detector`):

    p = (weight of reference windows at least as risky + 1) / (total weight + 1)

``score >= 0.999`` then reads "among the top 0.1% of ordinary windows". Scored before it is learned
(score-then-learn), a window drawn like the reference gets a p-value that is uniform up to ties, so
the share of ordinary windows over a threshold equals its budget without any assumption about the
shape of the tail (Vovk et al., *Algorithmic Learning in a Random World*, 2005; the same argument
makes conformal anomaly detection calibrated). Extreme-value tails (SPOT's generalized Pareto
fit, a normal tail) were tried first and rejected: on the detector's raw risk, whose top is a few
tight clusters of heavy customers, the fitted shape swung the realised share of the 0.005% budget
between 0.1x and 4x of its budget.

The price is resolution: a budget ``b`` can only be crossed once the reference holds about ``1/b``
windows (20,000 for the default suspend budget), so early in a deployment the strictest actions
wait for data instead of trusting an extrapolation. Until the reference is ready, a window is
read against it *and* the ordinary entities of that same window (`TailCalibrator.calibrate_among`):
they are exchangeable with it in the same sense, so the promise holds from the first minute, at
the resolution the windows seen so far give. The reference is a histogram with exponential
forgetting in event time (half-life 30 minutes by default), so it follows the day and the slow
changes of a growing population.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["TailCalibrator"]

F64 = npt.NDArray[np.float64]


class TailCalibrator:
    """Online conformal calibration of raw risk (``>= 0``) to exceedance probabilities.

    Parameters
    ----------
    upper
        Raw risk covered by the histogram; larger values share its last bin.
    bins
        Histogram resolution over ``[0, upper]``.
    half_life_ms
        Event time after which an old observation weighs half as much.
    min_count
        Observations needed before `ready` is true (no enforcement on a cold calibrator).
    floor
        Smallest probability reported.

    Examples
    --------
    Scores of ordinary windows exceed each budget's threshold about as often as the budget says,
    whatever the shape of their distribution (here a skewed body and a tight cluster on top):

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> def ordinary(n):
    ...     body, cluster = rng.gamma(2.0, 0.3, n - n // 20), rng.normal(2.5, 0.01, n // 20)
    ...     return np.concatenate([body, cluster])
    >>> cal = TailCalibrator(min_count=1000)
    >>> over, seen = np.zeros(3), 0
    >>> for minute in range(200):
    ...     batch = ordinary(2_000)
    ...     if cal.ready:
    ...         score = cal.calibrate(batch)
    ...         over += [(score >= 1 - b).sum() for b in (1e-3, 2e-4, 5e-5)]
    ...         seen += batch.size
    ...     cal.update(batch, now_ms=minute * 60_000)
    >>> [f"{x:.1f}x" for x in over / seen / np.array([1e-3, 2e-4, 5e-5])]
    ['1.0x', '0.9x', '0.7x']

    The strictest budget comes out a little under: the reference needs 20,000 windows before it
    can be crossed at all, and a p-value counts the window itself (``+ 1``), which is what makes it
    never too small.
    >>> float(cal.calibrate(np.array([50.0]))[0]) > 1 - 1e-4   # beyond everything seen
    True
    """

    def __init__(
        self,
        upper: float = 8.0,
        bins: int = 8192,
        half_life_ms: float = 30 * 60_000.0,
        min_count: int = 1_000,
        floor: float = 1e-10,
    ) -> None:
        self.upper = upper
        self.bins = bins
        self.half_life_ms = half_life_ms
        self.min_count = min_count
        self.floor = floor
        self.hist = np.zeros(bins, dtype=np.float64)
        self.seen = 0
        self.updated_ms: int | None = None
        self._at_or_above: F64 | None = None

    @property
    def ready(self) -> bool:
        return self.seen >= self.min_count

    @property
    def weight(self) -> float:
        """Total (forgotten) weight of the reference: about how many windows it holds."""
        return float(self.hist.sum())

    def _bin(self, raw: F64) -> npt.NDArray[np.intp]:
        return np.clip((raw * (self.bins / self.upper)).astype(np.intp), 0, self.bins - 1)

    def update(self, raw: F64, now_ms: int = 0) -> None:
        """Add a batch of raw risks observed at event time ``now_ms`` (older ones fade).

        Examples
        --------
        >>> cal = TailCalibrator(half_life_ms=60_000)
        >>> cal.update(np.ones(100), now_ms=0)
        >>> cal.update(np.ones(10), now_ms=60_000)     # one half-life later: 100 -> 50
        >>> cal.weight, cal.seen
        (60.0, 110)
        """
        if raw.size == 0:
            return
        if self.updated_ms is not None and now_ms > self.updated_ms:
            self.hist *= 0.5 ** ((now_ms - self.updated_ms) / self.half_life_ms)
        self.updated_ms = now_ms if self.updated_ms is None else max(self.updated_ms, now_ms)
        self.hist += np.bincount(self._bin(raw), minlength=self.bins)
        self.seen += int(raw.size)
        self._at_or_above = None

    def forget(self, keep: float) -> None:
        """Scale all history by ``keep`` (0..1), e.g. after a detected population shift.

        Examples
        --------
        >>> cal = TailCalibrator()
        >>> cal.update(np.ones(1_000))
        >>> cal.forget(0.25)
        >>> cal.weight, cal.seen                      # seen counts windows, not weight
        (250.0, 1000)
        """
        self.hist *= keep
        self._at_or_above = None

    def _tail(self) -> F64:
        """Per bin, the reference weight at or above it (kept until the histogram changes)."""
        if self._at_or_above is None:
            self._at_or_above = np.cumsum(self.hist[::-1])[::-1]
        return self._at_or_above

    def exceedance(self, raw: F64) -> F64:
        """Conformal p-values: the share of the reference at least as risky as each value.

        ``(weight at or above + 1) / (total weight + 1)``, at the histogram's resolution.

        Examples
        --------
        >>> cal = TailCalibrator(upper=8.0, bins=8)
        >>> cal.update(np.array([0.5, 1.5, 2.5, 3.5]))
        >>> (cal.exceedance(np.array([0.0, 2.0, 3.0, 9.0])) * 5).round(6).tolist()
        [5.0, 3.0, 2.0, 1.0]
        """
        at_or_above = self._tail()
        p = (at_or_above[self._bin(raw)] + 1.0) / (float(at_or_above[0]) + 1.0)
        out: F64 = np.clip(p, self.floor, 1.0)
        return out

    def calibrate_among(self, raw: F64, reference: npt.NDArray[np.bool_]) -> F64:
        """Calibrated scores of one window's raw risks against the reference so far *and* the
        window's own ``reference`` entries, each left out of its own: for a calibrator that is
        not `ready` yet, in the first minutes of a deployment.

        ``p = (weight at or above + window entries at or above + 1) / (total weight + window
        entries + 1)``, the window's entries counted without the one scored. Among ``n``
        entries drawn alike each such ``p`` is uniform on ``1/n .. 1``, so a threshold at
        budget ``b`` is crossed at most ``b`` of the time, as `calibrate` promises; a budget can
        only be crossed once about ``1/b`` entries have been seen. A campaign already running
        when the detector starts is ranked among its peers from the first minute, instead of
        waiting for the reference to fill (among the peers a window holds: in a worker, an
        account partition's share of them).

        Examples
        --------
        >>> cal = TailCalibrator()
        >>> raw = np.array([0.0, 1.0, 2.0, 3.0, 9.0])
        >>> cal.calibrate_among(raw, np.ones(5, dtype=bool)).round(3).tolist()   # nothing seen
        [0.0, 0.2, 0.4, 0.6, 0.8]
        >>> cal.calibrate_among(raw, np.array([True, True, True, True, False])).round(3).tolist()
        [0.0, 0.25, 0.5, 0.75, 0.8]
        >>> cal.update(np.linspace(0.0, 2.0, 95))       # and a window seen before
        >>> cal.calibrate_among(raw, np.ones(5, dtype=bool)).round(3).tolist()
        [0.0, 0.48, 0.96, 0.98, 0.99]
        """
        raw = np.nan_to_num(raw, nan=0.0)  # as `calibrate` scores it: nothing to go on
        ordinary = np.sort(raw[reference])
        own = reference.astype(np.float64)
        above = ordinary.size - np.searchsorted(ordinary, raw, side="left") - own
        at_or_above = self._tail()  # zeros while nothing is seen
        above = above + at_or_above[self._bin(raw)]
        p = (above + 1.0) / (float(at_or_above[0]) + ordinary.size - own + 1.0)
        out: F64 = 1.0 - np.clip(p, self.floor, 1.0)
        return out

    def calibrate(self, raw: F64) -> F64:
        """Calibrated scores ``1 - p`` for a batch of raw risks (0 while the reference is empty).

        Examples
        --------
        >>> cal = TailCalibrator()
        >>> cal.calibrate(np.array([3.0])).tolist()
        [0.0]
        >>> cal.update(np.linspace(0.0, 2.0, 999))
        >>> cal.calibrate(np.array([1.0, 5.0])).round(3).tolist()
        [0.5, 0.999]
        """
        if self.hist.sum() <= 0:
            return np.zeros_like(raw)
        result: F64 = 1.0 - self.exceedance(raw)
        return result

    def threshold(self, budget: float) -> float:
        """The smallest raw risk whose calibrated score reaches ``1 - budget`` (``inf`` while the
        reference is too small to resolve the budget).

        Examples
        --------
        >>> cal = TailCalibrator()
        >>> cal.update(np.linspace(0.0, 2.0, 999))
        >>> cal.threshold(0.01), cal.threshold(1e-4)   # 999 windows cannot resolve 1e-4
        (1.982421875, inf)
        """
        at_or_above = self._tail()
        ok = (at_or_above + 1.0) / (float(at_or_above[0]) + 1.0) <= budget
        if not ok.any():
            return float("inf")
        b = int(np.argmax(ok))
        edge = b * self.upper / self.bins
        # the lower edge of bin b, as _bin() floors it: b * upper / bins can round into bin b - 1
        while self._bin(np.array([edge]))[0] < b:
            edge = float(np.nextafter(edge, np.inf))
        return edge
