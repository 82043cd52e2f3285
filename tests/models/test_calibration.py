from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import TailCalibrator

MIN = 60_000


def ordinary(rng: np.random.Generator, n: int) -> np.ndarray:
    """A skewed body with a tight cluster on top, like heavy customers' raw risk."""
    body = rng.gamma(2.0, 0.3, n - n // 20)
    cluster = rng.normal(2.5, 0.01, n // 20)
    out: np.ndarray = rng.permutation(np.concatenate([body, cluster]))
    return out


@pytest.mark.parametrize("budget", [1e-3, 2e-4])
def test_realised_share_over_threshold_matches_the_budget(budget: float) -> None:
    rng = np.random.default_rng(0)
    cal = TailCalibrator()
    cal.update(ordinary(rng, 200_000), now_ms=0)
    threshold = cal.threshold(budget)
    assert np.isfinite(threshold)
    fresh = ordinary(rng, 200_000)
    realised = float((fresh >= threshold).mean())
    assert 0.5 * budget <= realised <= 2 * budget
    # and on the reference itself the share is never above the budget
    assert float(cal.exceedance(np.array([threshold]))[0]) <= budget


@pytest.mark.parametrize("budget", [1e-3, 2e-4])
def test_score_then_learn_share_over_one_minus_budget_matches_the_budget(budget: float) -> None:
    rng = np.random.default_rng(1)
    cal = TailCalibrator(min_count=1_000)
    over = seen = 0
    for minute in range(100):  # 2,000 windows a minute, 200,000 in all
        batch = ordinary(rng, 2_000)
        if cal.ready:
            over += int((cal.calibrate(batch) >= 1 - budget).sum())
            seen += batch.size
        cal.update(batch, now_ms=minute * MIN)
    assert 0.5 * budget <= over / seen <= 2 * budget


def test_p_values_are_counts_plus_one_over_total_plus_one() -> None:
    cal = TailCalibrator(upper=8.0, bins=8, min_count=1)  # bins of width 1
    cal.update(np.array([0.5, 1.5, 1.5, 2.5, 5.5]))
    p = cal.exceedance(np.array([0.0, 1.2, 2.0, 3.0, 5.0, 6.0, 100.0]))
    # at or above bins 0, 1, 2, 3, 5: 5, 4, 2, 1, 1 windows; above everything seen: none, and
    # the window itself counts, so the smallest p-value is 1 / (N + 1)
    assert p.tolist() == pytest.approx([6 / 6, 5 / 6, 3 / 6, 2 / 6, 2 / 6, 1 / 6, 1 / 6])
    assert cal.calibrate(np.array([1.2, 100.0])).tolist() == pytest.approx([1 / 6, 5 / 6])
    # values beyond ``upper`` share the last bin with what is in it
    cal.update(np.array([7.5]))
    assert cal.exceedance(np.array([7.2, 1e9])).tolist() == pytest.approx([2 / 7, 2 / 7])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0.0, 10.0), min_size=1, max_size=200),
    st.lists(st.floats(-1.0, 12.0), min_size=2, max_size=50),
)
def test_p_values_fall_as_risk_rises(reference: list[float], queries: list[float]) -> None:
    cal = TailCalibrator(bins=256, min_count=1)
    cal.update(np.array(reference))
    q = np.sort(np.array(queries))
    p = cal.exceedance(q)
    assert np.all(np.diff(p) <= 0)
    assert np.all(p >= 1 / (len(reference) + 1) - 1e-12) and np.all(p <= 1.0)
    score = cal.calibrate(q)
    assert np.all(np.diff(score) >= 0)


def test_threshold_and_calibrate_agree() -> None:
    rng = np.random.default_rng(2)
    cal = TailCalibrator()
    cal.update(ordinary(rng, 50_000))
    centres = (np.arange(cal.bins) + 0.5) * cal.upper / cal.bins
    for budget in (1e-2, 1e-3, 2e-4, 5e-5):
        t = cal.threshold(budget)
        assert ((cal.exceedance(centres) <= budget) == (centres >= t)).all()


def test_budget_beyond_resolution_has_no_threshold() -> None:
    cal = TailCalibrator(min_count=10)
    cal.update(np.linspace(0.0, 4.0, 999))
    # 999 windows resolve 1e-3 (1 / 1000) but not 2e-4
    assert np.isfinite(cal.threshold(1e-3))
    assert cal.threshold(2e-4) == float("inf")
    assert (cal.calibrate(np.array([1e6])) < 1 - 2e-4).all()


def test_cold_calibrator() -> None:
    cal = TailCalibrator(min_count=100)
    assert not cal.ready and cal.weight == 0.0
    assert cal.calibrate(np.array([0.1, 5.0])).tolist() == [0.0, 0.0]
    assert cal.threshold(0.1) == float("inf")
    cal.update(np.zeros(0), now_ms=5)  # an empty batch changes nothing, not even the clock
    assert cal.updated_ms is None and cal.seen == 0
    cal.update(np.ones(99))
    assert not cal.ready
    cal.update(np.ones(1))
    assert cal.ready and cal.seen == 100


def test_old_observations_weigh_half_after_a_half_life() -> None:
    cal = TailCalibrator(half_life_ms=30 * MIN)
    cal.update(np.ones(1_000), now_ms=0)
    cal.update(np.ones(1), now_ms=30 * MIN)
    assert cal.weight == pytest.approx(501.0)
    cal.update(np.ones(1), now_ms=90 * MIN)
    assert cal.weight == pytest.approx(501.0 / 4 + 1)
    # a late batch (older event time) is added without decaying anything or moving the clock
    cal.update(np.ones(10), now_ms=60 * MIN)
    assert cal.weight == pytest.approx(501.0 / 4 + 11)
    assert cal.updated_ms == 90 * MIN
    cal.forget(0.5)
    assert cal.weight == pytest.approx((501.0 / 4 + 11) / 2)
    assert cal.seen == 1_012  # windows observed, not forgotten


def test_threshold_follows_a_shift_in_event_time() -> None:
    rng = np.random.default_rng(3)
    cal, frozen = TailCalibrator(half_life_ms=30 * MIN), TailCalibrator(half_life_ms=30 * MIN)
    for minute in range(60):
        batch = rng.normal(3.0, 0.1, 1_000)
        cal.update(batch, now_ms=minute * MIN)
        frozen.update(batch)  # no event time: nothing fades
    assert cal.threshold(1e-3) == pytest.approx(3.31, abs=0.05)  # 99.9th percentile of N(3, .1)
    # The population calms down: six hours, twelve half-lives, of N(1, 0.1).
    for minute in range(60, 60 + 6 * 60):
        batch = rng.normal(1.0, 0.1, 1_000)
        cal.update(batch, now_ms=minute * MIN)
        frozen.update(batch)
    assert cal.threshold(1e-3) == pytest.approx(1.31, abs=0.05)
    # about 1 / (1 - 2 ** (-1 / 30)) minutes of windows are remembered
    assert cal.weight == pytest.approx(1_000 / (1 - 2 ** (-1 / 30)), rel=0.01)
    # without forgetting, the old population's windows still hold the top of the reference
    assert frozen.threshold(1e-3) > 3.0
    assert frozen.weight == pytest.approx(420_000)


def test_same_input_same_output_and_calibrate_does_not_learn() -> None:
    rng = np.random.default_rng(4)
    batches = [ordinary(rng, 1_000) for _ in range(20)]
    a, b = TailCalibrator(), TailCalibrator()
    for i, batch in enumerate(batches):
        a.update(batch, now_ms=i * MIN)
        b.update(batch, now_ms=i * MIN)
    probe = ordinary(rng, 5_000)
    first = a.calibrate(probe)
    assert np.array_equal(first, b.calibrate(probe))
    assert np.array_equal(first, a.calibrate(probe))
    assert a.threshold(1e-3) == b.threshold(1e-3)
    assert a.weight == b.weight and a.seen == b.seen == 20_000


def test_values_outside_the_range_share_the_edge_bins() -> None:
    cal = TailCalibrator(upper=4.0, bins=64, min_count=1)
    cal.update(np.array([-3.0, 0.0, 4.0, 50.0]))
    assert cal.hist[0] == 2 and cal.hist[-1] == 2
    assert cal.exceedance(np.array([1e6]))[0] == pytest.approx(3 / 5)


def test_threshold_itself_reaches_the_budget_for_any_bin_count() -> None:
    cal = TailCalibrator(upper=8.0, bins=3000, min_count=1)
    width = 8.0 / 3000
    # 999 windows at 0 and one in bin 26: the first bin with p <= 1e-3 is bin 27
    cal.update(np.concatenate([np.zeros(999), [26.5 * width]]))
    t = cal.threshold(1e-3)
    assert t == pytest.approx(27 * width)
    assert cal.calibrate(np.array([t]))[0] >= 1 - 1e-3
