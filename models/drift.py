"""Drift detection: River's Page-Hinkley test for millions of entities at a few bytes each.

A River ``drift.PageHinkley`` object per account would cost about a kilobyte of Python objects.
`PageHinkleyBank` keeps the same four numbers per entity (count, running mean, cumulative sum,
its minimum) in numpy columns and updates every entity of a window in one call; for any entity its
detections are exactly those of ``river.drift.PageHinkley(mode="up")`` fed the same values
(``tests/models/test_drift.py``). The population-level stream (one value per window) uses River's
``ADWIN`` directly in `models.detector`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["PageHinkleyBank"]


class PageHinkleyBank:
    """Upward Page-Hinkley tests, one per entity row, updated a batch of rows at a time.

    Parameters
    ----------
    min_instances
        Observations an entity needs before a change can be signalled.
    delta
        Tolerated drift per observation.
    threshold
        Cumulative rise above the running minimum that signals a change (lambda).
    alpha
        Forgetting factor of the cumulative sum.

    Examples
    --------
    >>> import numpy as np
    >>> bank = PageHinkleyBank(min_instances=5, delta=0.005, threshold=1.0)
    >>> rows = np.array([0, 1])
    >>> for step in range(30):
    ...     quiet = 0.1
    ...     shifted = 0.1 if step < 10 else 0.6      # entity 1 changes behaviour at step 10
    ...     hit = bank.update(rows, np.array([quiet, shifted]))
    ...     if hit.any():
    ...         print(step, hit.tolist())
    12 [False, True]
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        capacity: int = 1024,
    ) -> None:
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.n = np.zeros(capacity, dtype=np.int32)
        self.mean = np.zeros(capacity, dtype=np.float64)
        self.cusum = np.zeros(capacity, dtype=np.float64)
        self.minimum = np.full(capacity, np.inf, dtype=np.float64)
        self.detected = np.zeros(capacity, dtype=np.bool_)

    def grow(self, capacity: int) -> None:
        """Make room for rows ``0..capacity-1``."""
        extra = capacity - self.n.size
        if extra <= 0:
            return
        self.n = np.concatenate([self.n, np.zeros(extra, dtype=np.int32)])
        self.mean = np.concatenate([self.mean, np.zeros(extra)])
        self.cusum = np.concatenate([self.cusum, np.zeros(extra)])
        self.minimum = np.concatenate([self.minimum, np.full(extra, np.inf)])
        self.detected = np.concatenate([self.detected, np.zeros(extra, dtype=np.bool_)])

    def reset(self, rows: npt.NDArray[np.intp]) -> None:
        self.n[rows] = 0
        self.mean[rows] = 0.0
        self.cusum[rows] = 0.0
        self.minimum[rows] = np.inf
        self.detected[rows] = False

    def update(
        self, rows: npt.NDArray[np.intp], x: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        """Feed one value to each of ``rows`` (distinct); returns which now signal a change."""
        if rows.size and rows.max() >= self.n.size:
            self.grow(max(int(rows.max()) + 1, 2 * self.n.size))
        # As River: a detector that fired starts over with the next value.
        self.reset(rows[self.detected[rows]])
        n = self.n[rows] + 1
        mean = self.mean[rows] + (x - self.mean[rows]) / n
        cusum = self.alpha * self.cusum[rows] + (x - mean) - self.delta
        minimum = np.minimum(self.minimum[rows], cusum)
        detected = (n >= self.min_instances) & (cusum - minimum > self.threshold)
        self.n[rows] = n
        self.mean[rows] = mean
        self.cusum[rows] = cusum
        self.minimum[rows] = minimum
        self.detected[rows] = detected
        return detected

    def nbytes_per_entity(self) -> int:
        return int(
            self.n.itemsize
            + self.mean.itemsize
            + self.cusum.itemsize
            + self.minimum.itemsize
            + self.detected.itemsize
        )
