"""Exact ROC AUC on the whole Shuttle stream (score-then-learn): our forest next to River's HST.

    .venv/bin/python -m bench.shuttle

Both read the same MinMaxScaler-scaled stream (River's documented HST pipeline). Ours is scored
twice: one observation at a time (River's protocol, the same numbers as River for the same
configuration) and in 250-row batches scored before they are learned, the way the detector uses
it; "ours" is the configuration the detector runs (`DetectorConfig`: 25 trees, height 8).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt
from river import anomaly, datasets, preprocessing

from models.hst import HalfSpaceForest


def exact_auc(labels: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64]) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def stream() -> tuple[list[dict[Any, float]], npt.NDArray[np.bool_]]:
    scaler = preprocessing.MinMaxScaler()
    xs, ys = [], []
    for x, y in datasets.Shuttle():
        scaler.learn_one(x)  # type: ignore[no-untyped-call]
        xs.append(scaler.transform_one(x))  # type: ignore[no-untyped-call]
        ys.append(bool(y))
    return xs, np.array(ys)


def one_at_a_time(model: Any, xs: list[dict[Any, float]]) -> tuple[npt.NDArray[np.float64], float]:
    scores = np.empty(len(xs))
    t = time.perf_counter()
    for i, x in enumerate(xs):
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores, len(xs) / (time.perf_counter() - t)


def batched(
    model: HalfSpaceForest, xs: list[dict[Any, float]], batch: int = 250
) -> tuple[npt.NDArray[np.float64], float]:
    names = sorted(xs[0])
    X = np.array([[x[k] for k in names] for x in xs])
    model.build(names)
    scores = np.empty(len(xs))
    t = time.perf_counter()
    for i in range(0, len(X), batch):
        scores[i : i + batch] = model.score_many(X[i : i + batch])
        model.learn_many(X[i : i + batch])
    return scores, len(xs) / (time.perf_counter() - t)


def main() -> None:
    xs, ys = stream()
    print(f"Shuttle: {len(xs)} observations, {int(ys.sum())} anomalies, MinMaxScaler-scaled")
    rows = []
    s, rate = one_at_a_time(anomaly.HalfSpaceTrees(seed=42), xs)
    rows.append(("river HalfSpaceTrees() defaults, one at a time", exact_auc(ys, s), rate))
    s, rate = one_at_a_time(HalfSpaceForest(seed=42), xs)
    rows.append(("ours, River defaults, one at a time", exact_auc(ys, s), rate))
    s, rate = one_at_a_time(HalfSpaceForest(n_trees=25, height=8, seed=42), xs)
    rows.append(("ours, 25 trees h8 (detector config), one at a time", exact_auc(ys, s), rate))
    s, rate = batched(HalfSpaceForest(n_trees=25, height=8, seed=42), xs)
    rows.append(("ours, 25 trees h8 (detector config), 250-row batches", exact_auc(ys, s), rate))
    for name, auc, rate in rows:
        print(f"{name:58s} AUC {auc:.4f}  {rate:>10,.0f} obs/s")
    base = rows[0][1]
    ours = rows[2][1]
    verdict = "not worse" if ours >= base else "WORSE"
    print(f"ours vs River default: AUC {ours - base:+.4f} ({verdict})")


if __name__ == "__main__":
    main()
