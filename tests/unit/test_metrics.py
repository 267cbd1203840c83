"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.metrics import coverage_at_k, ndcg_at_k, recall_at_k

RANKED = np.array(
    [
        [5, 3, 9, -1],  # target 3 at rank 2
        [1, 2, 4, 7],  # target 8 missing
        [8, 0, 6, 2],  # target 8 at rank 1
    ]
)
TARGETS = np.array([3, 8, 8])


def test_recall_is_the_hit_rate() -> None:
    assert recall_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, TARGETS, 2) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, TARGETS, 4) == pytest.approx(2 / 3)


def test_ndcg_discounts_by_log2_rank() -> None:
    # user 0: 1/log2(3); user 1: 0; user 2: 1/log2(2) = 1
    expected = (1 / math.log2(3) + 0 + 1) / 3
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx(expected)
    assert ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)


def test_coverage_counts_distinct_items_ignoring_padding() -> None:
    # top-2 lists: {5,3}, {1,2}, {8,0} -> 6 distinct of 10 items
    assert coverage_at_k(RANKED, 2, 10) == pytest.approx(0.6)
    # all: {5,3,9} {1,2,4,7} {8,0,6,2} -> 10 distinct (2 twice) of 20
    assert coverage_at_k(RANKED, 4, 20) == pytest.approx(10 / 20)


def test_empty_input_is_zero() -> None:
    empty = np.empty((0, 5), np.int64)
    assert recall_at_k(empty, np.empty(0, np.int64), 5) == 0.0
    assert ndcg_at_k(empty, np.empty(0, np.int64), 5) == 0.0
