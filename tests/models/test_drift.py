from __future__ import annotations

import numpy as np
import pytest
from river import drift

from models.drift import PageHinkleyBank


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bank_detects_exactly_what_river_page_hinkley_detects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_entities, steps = 5, 400
    params = {"min_instances": 10, "delta": 0.01, "threshold": 1.5, "alpha": 0.999}
    bank = PageHinkleyBank(**params, capacity=2)  # grows on demand
    rivers = [drift.PageHinkley(mode="up", **params) for _ in range(n_entities)]
    shift_at = rng.integers(50, 350, size=n_entities)
    fired = 0
    for t in range(steps):
        # Not every entity is seen every step, as with real windows.
        rows = np.flatnonzero(rng.random(n_entities) < 0.8)
        x = rng.normal(0.2, 0.05, size=rows.size) + np.where(t >= shift_at[rows], 0.5, 0.0)
        got = bank.update(rows, x)
        for r, value, hit in zip(rows, x, got, strict=True):
            rivers[r].update(float(value))
            assert hit == rivers[r].drift_detected
            fired += int(hit)
    assert fired >= n_entities  # every entity's shift was seen


def test_state_is_a_few_bytes_per_entity() -> None:
    assert PageHinkleyBank().nbytes_per_entity() <= 40
