"""Why an entity window scored as it did: per-feature contributions to its anomaly score.

Contribution is measured on the model itself, not guessed from z-scores: the window is scored
again with one feature at a time moved back to the population's centre, and the fall in the
half-space-forest score is that feature's share. It costs one batch of ``n_features`` scores per
*enforced* window (rare), never per scored window.
"""

from __future__ import annotations

import math
from typing import NotRequired, TypedDict

import numpy as np
import numpy.typing as npt

from models.features import Feature
from models.hst import HalfSpaceForest

__all__ = ["Reason", "explain"]

F64 = npt.NDArray[np.float64]


class Reason(TypedDict):
    """One line of an explanation, as carried by enforcement events.

    ``detail`` (optional) says it in words, for reasons that are not one number: what holds a
    campaign together, which campaign an account joined.
    """

    feature: str
    value: float
    baseline: float | None
    population_baseline: float | None
    contribution: float
    detail: NotRequired[str]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)


def explain(
    forest: HalfSpaceForest,
    features: tuple[Feature, ...],
    x: F64,
    centre: F64,
    raw: F64,
    own_baseline: F64,
    population_baseline: F64,
    top: int = 6,
) -> list[Reason]:
    """Reasons for one window, largest contribution first.

    ``x`` is the window's model input (squashed, one-sided), ``centre`` the population centre in
    the same space; ``raw``, ``own_baseline`` and ``population_baseline`` are in the features'
    own units, NaN where unknown. Contributions are shares of the total and sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from models.features import Feature
    >>> rng = np.random.default_rng(1)
    >>> forest = HalfSpaceForest(n_trees=20, height=6, window_size=200, seed=3)
    >>> forest.build(["a", "b"])
    >>> forest.learn_many(rng.uniform(0.0, 0.3, size=(400, 2)))
    >>> feats = (Feature("a", "u"), Feature("b", "u"))
    >>> reasons = explain(forest, feats, np.array([0.95, 0.1]), np.array([0.15, 0.15]),
    ...                   np.array([0.95, 0.1]), np.full(2, np.nan), np.array([0.15, 0.15]))
    >>> [(r["feature"], r["contribution"]) for r in reasons]
    [('a', 1.0)]
    """
    n = x.size
    base = forest.score_many(x[None, :])[0]
    moved = np.repeat(x[None, :], n, axis=0)
    idx = np.arange(n)
    moved[idx, idx] = np.minimum(x, centre)
    drop = np.maximum(base - forest.score_many(moved), 0.0)
    total = float(drop.sum())
    if total <= 0:
        return []
    share = drop / total
    reasons: list[Reason] = []
    for i in np.argsort(-share, kind="stable")[:top].tolist():
        if share[i] < 0.005:
            break
        own = float(own_baseline[i])
        pop = float(population_baseline[i])
        reasons.append(
            Reason(
                feature=features[i].name,
                value=_num(float(raw[i])) or 0.0,
                baseline=_num(own) if not math.isnan(own) else _num(pop),
                population_baseline=_num(pop),
                contribution=round(float(share[i]), 4),
            )
        )
    return reasons
