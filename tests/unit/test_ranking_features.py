"""Ranking features added for issue 3: co-visitation with the newest history items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ranking.export import example_batch
from ranking.features import DENSE_FEATURES, MAX_HISTORY, RECENCY_DECAY, FeatureBuilder
from ranking.model import Ranker, RankerConfig
from recdata.items import ItemTable
from recdata.split import UserSequences
from retrieval.covisitation import CoVisitation

COLUMN = {name: i for i, name in enumerate(DENSE_FEATURES)}


def _items(n: int = 8) -> ItemTable:
    frame = pd.DataFrame(
        {
            "item_id": np.arange(1, n + 1, dtype=np.int64),
            "title": [f"item {i}" for i in range(n)],
            "description": [""] * n,
            "category": ["a", "b"] * (n // 2),
            "brand": ["x"] * n,
            "price": np.ones(n),
            "tags": [[] for _ in range(n)],
        }
    )
    items = ItemTable.from_frame(frame)
    items.popularity = np.ones(n, np.float32)
    return items


def _covisitation(n: int = 8) -> CoVisitation:
    # 1 is followed by 2, 3 by 4, 5 by 6: the newest item decides.
    seqs = [np.array([1, 2, 0]), np.array([3, 4, 7]), np.array([5, 6, 0]), np.array([1, 2, 5])]
    return CoVisitation.fit(UserSequences([str(i) for i in range(4)], seqs), n, window=1, top=4)


def test_build_and_build_ragged_agree_on_the_new_columns() -> None:
    features = FeatureBuilder(_items(), covisitation=_covisitation())
    histories = [np.array([3, 1]), np.array([5])]
    candidates = np.array([[2, 4, 6], [6, 2, 0]])
    scores = np.full(candidates.shape, 0.5, np.float32)
    batch = features.build(histories, candidates, scores)
    ragged = features.build_ragged(histories, list(candidates), list(scores))
    torch.testing.assert_close(ragged.dense, batch.dense)
    assert batch.dense.shape == (6, len(DENSE_FEATURES))


def test_without_a_table_the_co_visitation_columns_are_zero() -> None:
    features = FeatureBuilder(_items())
    batch = features.build([np.array([1])], np.array([[2, 4]]), None)
    for name in ("covisitation", "covisitation_newest", "covisitation_recent3"):
        assert (batch.dense[:, COLUMN[name]] == 0).all()


def test_newest_item_co_visitation_features() -> None:
    covis = _covisitation()
    features = FeatureBuilder(_items(), covisitation=covis)
    # History 5, 3, 1 (1 newest): candidate 2 follows the newest; 4 follows 3; 6 follows 5.
    batch = features.build([np.array([5, 3, 1])], np.array([[2, 4, 6]]), None)
    newest = batch.dense[:, COLUMN["covisitation_newest"]].numpy()
    recent3 = batch.dense[:, COLUMN["covisitation_recent3"]].numpy()
    total = batch.dense[:, COLUMN["covisitation"]].numpy()
    assert newest[0] > 0 and newest[1] == 0 and newest[2] == 0
    assert (recent3 > 0).all()
    # Three history items: the 3-item and 10-item votes are the same sum.
    np.testing.assert_allclose(recent3, total, rtol=1e-6)
    by_age = covis.pair_scores_by_age(features._pad([np.array([5, 3, 1])]), np.array([[2]]), 8)
    np.testing.assert_allclose(newest[0], np.log1p(by_age[0, 0, 0]), rtol=1e-6)


def test_switched_off_features_do_not_reach_the_model() -> None:
    names = ["covisitation_newest", "covisitation_recent3"]
    torch.manual_seed(0)
    cfg = RankerConfig(
        num_items=50, num_categories=4, num_brands=3, num_tags=2, recent_covisitation=False
    )
    model = Ranker(cfg).eval()
    batch = example_batch(cfg, users=2, pairs=10, seed=1)
    with torch.inference_mode():
        before = model(*batch.tensors())
        for name in names:
            batch.dense[:, COLUMN[name]] += 5.0
        torch.testing.assert_close(model(*batch.tensors()), before)


def test_history_inputs_are_the_newest_items_right_aligned() -> None:
    """The model's history input is the categories of the newest MAX_HISTORY items, in
    order, right-aligned after padding; same_category and recent_category are computed
    over exactly those items (checked against the formulas written out here), in both
    layouts. Catches a feature path that keeps fewer items (the newest only), another
    window, or blinds the history (all padding)."""
    n = 60
    items = _items(n)
    items.categories = (np.arange(n) % 5).astype(items.categories.dtype)  # 5 categories
    items.category_names = [f"c{i}" for i in range(5)]
    features = FeatureBuilder(items)
    rng = np.random.default_rng(4)
    long = rng.integers(0, n, 2 * MAX_HISTORY + 3)
    short = np.array([7, 12, 3])
    candidates = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    pad = len(items.category_names)
    for batch in (
        features.build([long, short], candidates, None),
        features.build_ragged([long, short], list(candidates), [None, None]),
    ):
        window = long[-MAX_HISTORY:]
        np.testing.assert_array_equal(batch.history_categories[0].numpy(), items.categories[window])
        assert batch.history_categories[1, : MAX_HISTORY - 3].eq(pad).all()
        np.testing.assert_array_equal(
            batch.history_categories[1, -3:].numpy(), items.categories[short]
        )
        for user, history in ((0, window), (1, short)):
            cats = items.categories[history]
            weights = RECENCY_DECAY ** np.arange(len(history) - 1, -1, -1)
            for j, row in enumerate(candidates[user]):
                pair = user * candidates.shape[1] + j
                match = cats == items.categories[row]
                dense = batch.dense[pair].numpy()
                assert dense[COLUMN["same_category"]] == pytest.approx(match.mean(), abs=1e-6)
                assert dense[COLUMN["recent_category"]] == pytest.approx(
                    (weights * match).sum() / weights.sum(), abs=1e-6
                )
