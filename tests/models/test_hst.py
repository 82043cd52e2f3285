"""HalfSpaceForest is River's HalfSpaceTrees, and follows River's estimator contract."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from river import anomaly, datasets, metrics, preprocessing
from river.checks import common

from models.hst import HalfSpaceForest


@pytest.fixture(scope="module")
def shuttle() -> list[tuple[dict[str, float], bool]]:
    return list(itertools.islice(datasets.Shuttle(), 3000))


@pytest.mark.parametrize("params", [{}, {"n_trees": 7, "height": 5, "window_size": 100}])
def test_scores_equal_rivers_half_space_trees(shuttle, params) -> None:
    scaler = preprocessing.MinMaxScaler()
    ours, river_hst = HalfSpaceForest(seed=3, **params), anomaly.HalfSpaceTrees(seed=3, **params)
    for x, _ in shuttle:
        scaler.learn_one(x)
        z = scaler.transform_one(x)
        assert ours.score_one(z) == pytest.approx(river_hst.score_one(z), abs=1e-12)
        ours.learn_one(z)
        river_hst.learn_one(z)


def test_batch_learning_and_scoring_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(1_000, 4))
    one, many = HalfSpaceForest(window_size=64, seed=1), HalfSpaceForest(window_size=64, seed=1)
    names = ["a", "b", "c", "d"]
    for row in X[:500]:
        one.learn_one(dict(zip(names, row, strict=True)))
    many.build(names)
    many.learn_many(X[:200])
    many.learn_many(X[200:500])
    singles = [one.score_one(dict(zip(names, r, strict=True))) for r in X[500:]]
    np.testing.assert_allclose(many.score_many(X[500:]), singles, atol=1e-12)


def test_missing_features_follow_the_heavier_branch_like_river(shuttle) -> None:
    ours, river_hst = HalfSpaceForest(seed=5), anomaly.HalfSpaceTrees(seed=5)
    scaler = preprocessing.MinMaxScaler()
    for i, (x, _) in enumerate(shuttle[:1500]):
        scaler.learn_one(x)
        z = scaler.transform_one(x)
        if i % 3 == 0:
            z = {k: v for k, v in z.items() if k not in (2, 5)}
        assert ours.score_one(z) == pytest.approx(river_hst.score_one(z), abs=1e-12)
        ours.learn_one(z)
        river_hst.learn_one(z)


def _shuttle_dataset(n: int = 400):
    scaler = preprocessing.MinMaxScaler()
    rows = []
    for x, y in itertools.islice(datasets.Shuttle(), n):
        scaler.learn_one(x)
        rows.append((scaler.transform_one(x), y))
    return rows


GENERAL = [
    common.check_repr,
    common.check_str,
    common.check_tags,
    common.check_clone_same_class,
    common.check_clone_is_idempotent,
    common.check_init_has_default_params_for_tests,
    common.check_init_default_params_are_not_mutable,
    common.check_doc,
    common.check_clone_changes_memory_addresses,
    common.check_mutate_can_be_idempotent,
    common.check_pickling_supports_roundtrip,
    common.check_repr_roundtrips_clone,
    common.check_clone_with_new_params_applies,
    common.check_get_params_matches_signature,
]
ON_DATA = [
    common.check_learn_one,
    common.check_pickling,
    common.check_shuffle_features_no_impact,
    common.check_emerging_features,
    common.check_disappearing_features,
    common.check_radically_disappearing_features,
    common.check_predict_one_pure,
    common.check_predict_one_before_any_learn,
    common.check_no_state_aliasing_with_input,
    common.check_clone_is_independent,
    common.check_seeding_is_idempotent,
]


@pytest.mark.parametrize("check", GENERAL, ids=lambda c: c.__name__)
def test_river_conformance(check) -> None:
    for params in HalfSpaceForest._unit_test_params():
        check(HalfSpaceForest(**params))


@pytest.mark.parametrize("check", ON_DATA, ids=lambda c: c.__name__)
def test_river_conformance_on_local_shuttle_data(check) -> None:
    # river.checks.check_estimator would download CreditCard; the same checks run on Shuttle.
    for params in HalfSpaceForest._unit_test_params():
        check(HalfSpaceForest(**params), dataset=_shuttle_dataset())


def test_ranks_shuttle_anomalies_and_survives_pickling() -> None:
    model = HalfSpaceForest(seed=42)
    auc = metrics.ROCAUC()
    for x, y in _shuttle_dataset(3000):
        auc.update(y, model.score_one(x))
        model.learn_one(x)
    assert auc.get() > 0.8
    clone = pickle.loads(pickle.dumps(model))
    x = _shuttle_dataset(5)[0][0]
    assert clone.score_one(x) == model.score_one(x)
