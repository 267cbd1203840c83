"""Ranking features added for issue 3: co-visitation with the newest history items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ranking.export import example_batch
from ranking.features import DENSE_FEATURES, FeatureBuilder
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
