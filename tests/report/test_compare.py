"""Paired bootstrap against known cases."""

import numpy as np
import pytest

from harness.analysis.compare import align, paired_bootstrap
from harness.spec.tasks import get_task


def test_always_right_vs_always_wrong():
    labels = np.array([0, 1] * 50)
    res = paired_bootstrap(get_task("rte"), labels, 1 - labels, labels, resamples=200)
    assert res.diff == 100.0 and res.ci_low == 100.0 and res.ci_high == 100.0 and res.p_value == 0.0


def test_identical_systems():
    rng = np.random.default_rng(1)
    labels, preds = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    res = paired_bootstrap(get_task("rte"), preds, preds, labels, resamples=200)
    assert res.diff == 0 and res.ci_low == res.ci_high == 0 and res.p_value == 1.0


def test_one_flip_in_a_thousand_is_not_significant_but_a_big_gap_is():
    labels = np.zeros(1000, dtype=int)
    a = labels.copy()
    b = labels.copy()
    b[0] = 1
    res = paired_bootstrap(get_task("rte"), a, b, labels, resamples=500)
    assert res.diff == pytest.approx(0.1) and res.ci_low >= 0 and res.p_value > 0.05
    b[:100] = 1
    res = paired_bootstrap(get_task("rte"), a, b, labels, resamples=500)
    assert res.diff == pytest.approx(10.0) and res.ci_low > 7 and res.p_value < 0.01


def test_non_decomposable_metric_is_recomputed_per_resample():
    labels = np.array([1, 0] * 100)
    res = paired_bootstrap(get_task("mrpc"), labels, np.ones(200, dtype=int), labels, resamples=100)
    # perfect: F1 100, acc 100 -> 100; all-positive: F1 66.7, acc 50 -> 58.3
    assert res.score_a == 100.0 and res.score_b == pytest.approx(58.333, abs=0.01)


def test_align_matches_examples_by_index():
    a = (np.array([2, 0, 1]), np.array([20, 0, 10]), np.array([2, 0, 1]))
    b = (np.array([1, 2, 3]), np.array([11, 21, 31]), np.array([1, 2, 3]))
    pa, pb, lab = align(a, b)
    assert list(pa) == [10, 20] and list(pb) == [11, 21] and list(lab) == [1, 2]
