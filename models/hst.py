"""Half-space trees as numpy arrays: River's estimator, scored and learned a batch at a time.

`HalfSpaceForest` is River's ``anomaly.HalfSpaceTrees`` (Tan, Ting & Liu, 2011) with the trees
stored as flat arrays (heap layout: the children of node ``i`` are ``2i+1`` and ``2i+2``) instead
of linked node objects. Grown from the same seed it holds exactly the same trees as River's, and
``score_one`` / ``learn_one`` return exactly the same numbers (``tests/models/test_hst.py``);
``score_many`` / ``learn_many`` walk all trees for a whole batch with a handful of numpy calls,
which is what makes one forest per entity kind affordable at peak traffic.
"""

from __future__ import annotations

import collections
import functools
import random
from typing import Any

import numpy as np
import numpy.typing as npt
from river import base

__all__ = ["HalfSpaceForest"]

F64 = npt.NDArray[np.float64]


class HalfSpaceForest(base.AnomalyDetector):
    """Half-space trees with vectorised batch scoring and learning.

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Height of each tree (``2 ** (height + 1) - 1`` nodes per tree).
    window_size
        Observations per mass window: reference masses are replaced by the latest window's
        masses every ``window_size`` learned observations.
    limits
        Range of each feature; ``(0, 1)`` for any feature not listed.
    seed
        Random number seed (same meaning, and same trees, as River's ``HalfSpaceTrees``).

    Examples
    --------
    The example from River's ``HalfSpaceTrees`` docstring gives the same scores:

    >>> X = [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]
    >>> hsf = HalfSpaceForest(n_trees=5, height=3, window_size=3, seed=42)
    >>> for x in X[:3]:
    ...     hsf.learn_one({'x': x})
    >>> for x in X:
    ...     hsf.learn_one({'x': x})
    ...     print(f'Anomaly score for x={x:.3f}: {hsf.score_one({"x": x}):.3f}')
    Anomaly score for x=0.500: 0.107
    Anomaly score for x=0.450: 0.071
    Anomaly score for x=0.430: 0.107
    Anomaly score for x=0.440: 0.107
    Anomaly score for x=0.445: 0.107
    Anomaly score for x=0.450: 0.071
    Anomaly score for x=0.000: 0.853

    A batch is scored in one call, with rows ordered like ``features``:

    >>> import numpy as np
    >>> print(hsf.score_many(np.array([[0.44], [0.0]])).round(3))
    [0.036 0.853]
    """

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: dict[base.typing.FeatureName, tuple[float, float]] | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limits: collections.defaultdict[base.typing.FeatureName, tuple[float, float]] = (
            collections.defaultdict(functools.partial(tuple, (0.0, 1.0)))  # type: ignore[arg-type]
        )
        if limits is not None:
            self.limits.update(limits)
        self.seed = seed
        self.rng = random.Random(seed)
        self.features: list[base.typing.FeatureName] = []
        self.counter = 0
        self._first_window = True
        n_nodes = 2 ** (height + 1) - 1
        n_inner = 2**height - 1
        self._feature = np.zeros((n_trees, max(n_inner, 1)), dtype=np.int64)
        self._threshold = np.zeros((n_trees, max(n_inner, 1)), dtype=np.float64)
        self._r_mass = np.zeros((n_trees, n_nodes), dtype=np.float64)
        self._l_mass = np.zeros((n_trees, n_nodes), dtype=np.float64)

    @property
    def size_limit(self) -> float:
        """Mass under which scoring stops descending (0.1 * window_size, from the paper)."""
        return 0.1 * self.window_size

    @property
    def _max_score(self) -> float:
        return float(self.n_trees * self.window_size * (2 ** (self.height + 1) - 1))

    @property
    def ready(self) -> bool:
        """Whether a first window of reference mass has been learned (scores are 0 before)."""
        return not self._first_window

    @property
    def is_built(self) -> bool:
        return bool(self.features)

    def build(self, features: list[base.typing.FeatureName]) -> None:
        """Grow the random trees over these feature names (done by the first learn)."""
        self.features = sorted(features)  # type: ignore[type-var]
        for t in range(self.n_trees):
            limits = {name: self.limits[name] for name in self.features}
            self._grow(t, 0, limits, self.height)

    def _grow(
        self, t: int, node: int, limits: dict[base.typing.FeatureName, tuple[float, float]], h: int
    ) -> None:
        # Same random calls in the same order as river.tree.padded.make_padded_tree.
        if h == 0:
            return
        names = list(limits)
        on = self.rng.choices(population=names, weights=[b - a for a, b in limits.values()])[0]
        a, b = limits[on]
        at = self.rng.uniform(a + 0.15 * (b - a), b - 0.15 * (b - a))
        self._feature[t, node] = self.features.index(on)
        self._threshold[t, node] = at
        limits[on] = (a, at)
        self._grow(t, 2 * node + 1, limits, h - 1)
        limits[on] = (at, b)
        self._grow(t, 2 * node + 2, limits, h - 1)
        limits[on] = (a, b)

    def _matrix(self, x: dict[base.typing.FeatureName, Any]) -> F64:
        return np.array([[x.get(name, np.nan) for name in self.features]], dtype=np.float64)

    def _step(self, nodes: npt.NDArray[np.int64], X: F64) -> npt.NDArray[np.int64]:
        """One level down every tree for every row; NaN goes where most mass went (as River).

        Arrays are indexed flat (tree offset + node, row offset + feature): the same elements
        as 2-D fancy indexing, at a fraction of its cost."""
        inner = nodes + np.arange(self.n_trees, dtype=np.int64) * self._feature.shape[1]
        cell = self._feature.ravel()[inner]
        cell += np.arange(X.shape[0], dtype=np.int64)[:, None] * X.shape[1]
        value = np.ascontiguousarray(X).ravel()[cell]
        right = value >= self._threshold.ravel()[inner]
        missing = np.isnan(value)
        if missing.any():
            n_nodes = self._l_mass.shape[1]
            child = 2 * nodes + 1 + np.arange(self.n_trees, dtype=np.int64) * n_nodes
            mass = self._l_mass.ravel()
            right = np.where(missing, mass[child] < mass[child + 1], right)
        below: npt.NDArray[np.int64] = 2 * nodes + 1 + right
        return below

    def score_many(self, X: F64) -> F64:
        """Anomaly scores in [0, 1] for each row of ``X`` (columns in ``self.features`` order)."""
        n = X.shape[0]
        if self._first_window or n == 0:
            return np.zeros(n)
        offset = np.arange(self.n_trees, dtype=np.int64) * self._r_mass.shape[1]
        mass = self._r_mass.ravel()
        nodes = np.zeros((n, self.n_trees), dtype=np.int64)
        score = np.zeros((n, self.n_trees))
        active = np.ones((n, self.n_trees), dtype=np.bool_)
        limit = self.size_limit
        for depth in range(self.height):
            r = mass[nodes + offset]
            score += np.where(active, r * float(2**depth), 0.0)
            active &= r >= limit
            nodes = self._step(nodes, X)
        r = mass[nodes + offset]
        score += np.where(active, r * float(2**self.height), 0.0)
        result: F64 = 1.0 - score.sum(axis=1) / self._max_score
        return result

    def learn_many(self, X: F64) -> None:
        """Learn every row of ``X``, in order, pivoting masses at window boundaries."""
        if not self.is_built:
            raise ValueError("call build(features) or learn_one first to fix the feature order")
        start = 0
        while start < X.shape[0]:
            stop = min(X.shape[0], start + self.window_size - self.counter)
            self._add_mass(X[start:stop])
            self.counter += stop - start
            if self.counter == self.window_size:
                self._r_mass = self._l_mass
                self._l_mass = np.zeros_like(self._r_mass)
                self._first_window = False
                self.counter = 0
            start = stop

    def _add_mass(self, X: F64) -> None:
        # Each level's nodes counted with one bincount (np.add.at is several times slower), level
        # by level as River does; a step down from level d reads the masses of level d + 1.
        shape = self._l_mass.shape
        offset = np.arange(self.n_trees, dtype=np.int64) * shape[1]
        nodes = np.zeros((X.shape[0], self.n_trees), dtype=np.int64)
        for depth in range(self.height + 1):
            counts = np.bincount((nodes + offset).ravel(), minlength=shape[0] * shape[1])
            self._l_mass += counts.reshape(shape)
            if depth < self.height:
                nodes = self._step(nodes, X)

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        if not self.is_built:
            self.build(list(x))
        self.learn_many(self._matrix(x))

    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        if not self.is_built:
            return 0.0
        return float(self.score_many(self._matrix(x))[0])

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"n_trees": 5, "height": 3, "window_size": 30, "seed": 42}
