"""Per-tag thresholds chosen on validation data (tagging.calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from tagging.calibration import THRESHOLD_GRID, calibrate_thresholds
from tagging.train import multilabel_prf


def test_each_tag_gets_its_own_f1_optimal_threshold() -> None:
    # Tag 0 separates at ~0.8 (negatives up to 0.7), tag 1 at ~0.2 (positives from 0.25).
    rng = np.random.default_rng(0)
    n = 200
    true = np.zeros((n, 2), bool)
    true[:100, 0] = True
    true[50:150, 1] = True
    proba = np.empty((n, 2), np.float32)
    proba[:, 0] = np.where(true[:, 0], rng.uniform(0.8, 1.0, n), rng.uniform(0.0, 0.7, n))
    proba[:, 1] = np.where(true[:, 1], rng.uniform(0.25, 0.5, n), rng.uniform(0.0, 0.15, n))
    cal = calibrate_thresholds(proba, true, min_positives=10)
    assert cal.calibrated.tolist() == [True, True]
    for tag in (0, 1):  # strictly above every negative, at or below every positive
        assert proba[~true[:, tag], tag].max() < cal.thresholds[tag]
        assert cal.thresholds[tag] <= proba[true[:, tag], tag].min()
    assert cal.thresholds[0] > 0.6 and cal.thresholds[1] < 0.3
    # Perfect separation per tag; no single global threshold achieves it.
    assert multilabel_prf(proba >= cal.thresholds, true)["micro_f1"] == 1.0
    assert multilabel_prf(proba >= cal.global_threshold, true)["micro_f1"] < 1.0


def test_sparse_tags_fall_back_to_the_global_threshold() -> None:
    true = np.zeros((50, 3), bool)
    true[:20, 0] = True
    true[20:40, 1] = True
    true[45:47, 2] = True  # two positives: too few to trust an optimum
    proba = np.where(true, 0.9, 0.1).astype(np.float32)
    proba[45, 2] = 0.3
    cal = calibrate_thresholds(proba, true, min_positives=5)
    assert cal.calibrated.tolist() == [True, True, False]
    assert cal.num_calibrated == 2
    assert cal.thresholds[2] == pytest.approx(cal.global_threshold)
    assert cal.global_threshold in set(THRESHOLD_GRID.tolist())
    assert cal.thresholds.dtype == np.float32


def test_global_threshold_is_the_lowest_micro_f1_optimum() -> None:
    true = np.array([[1, 0], [0, 1], [0, 0]], bool)
    proba = np.array([[0.8, 0.6], [0.3, 0.7], [0.2, 0.5]], np.float32)
    # Any threshold in (0.6, 0.7] keeps exactly the two true positives: lowest is 0.61.
    assert calibrate_thresholds(proba, true).global_threshold == pytest.approx(0.61)


def test_no_validation_positives_means_the_default_everywhere() -> None:
    empty = calibrate_thresholds(np.zeros((0, 4)), np.zeros((0, 4), bool), default=0.4)
    assert empty.thresholds.tolist() == pytest.approx([0.4] * 4)
    assert empty.global_threshold == 0.4 and empty.num_calibrated == 0
    none = calibrate_thresholds(np.full((3, 2), 0.5), np.zeros((3, 2), bool), default=0.3)
    assert none.thresholds.tolist() == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError):
        calibrate_thresholds(np.zeros((2, 3)), np.zeros((3, 2), bool))
