"""Live catalogue rows for the ranker: appended or replaced in a copy, unknown values mapped
to what the trained model can read, the original table untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ranking.features import DENSE_FEATURES as DENSE
from ranking.features import FeatureBuilder
from ranking.live_items import RankingItem, with_items
from recdata.items import ItemTable


def _table() -> ItemTable:
    frame = pd.DataFrame(
        {
            "item_id": [10, 20, 30],
            "title": ["red shoe", "blue shirt", "green hat"],
            "category": ["shoes", "shirts", "hats"],
            "brand": ["acme", "acme", "zed"],
            "price": [10.0, 20.0, 30.0],
        }
    )
    table = ItemTable.from_frame(frame, popularity=np.array([5.0, 3.0, 1.0]))
    table.tag_names = ["red", "blue", "green"]
    table.tag_matrix = np.eye(3, dtype=np.uint8)
    return table


def test_new_and_changed_items() -> None:
    table = _table()
    new = [
        RankingItem(40, "blue boot", "boots", "nova", 15.0, ("blue", "unknown-tag")),
        RankingItem(20, "blue shirt v2", "shoes", "zed", 25.0, ("red",)),
    ]
    extended, updated = with_items(table, new)
    assert updated == 1
    assert extended.item_ids.tolist() == [10, 20, 30, 40]
    rows, known = extended.rows_of(np.array([40, 20]))
    assert known.all() and rows.tolist() == [3, 1]
    # First-seen category and brand are appended (the model maps them: test_features below).
    assert extended.category_names[extended.categories[3]] == "boots"
    assert extended.category_names[extended.categories[1]] == "shoes"
    assert extended.brand_names[extended.brands[3]] == "nova"
    assert extended.brand_names[extended.brands[1]] == "zed"
    assert table.category_names == ["hats", "shirts", "shoes"]  # the original is untouched
    assert extended.tag_matrix is not None
    assert extended.tag_matrix[3].tolist() == [0, 1, 0]
    assert extended.tag_matrix[1].tolist() == [1, 0, 0]
    assert extended.popularity.tolist() == [5.0, 3.0, 1.0, 0.0]  # changed keeps its own
    assert extended.titles[1] == "blue shirt v2"
    # The served table is untouched (requests in flight keep reading it).
    assert table.item_ids.tolist() == [10, 20, 30] and table.titles[1] == "blue shirt"
    assert table.tag_matrix is not None and table.tag_matrix[1].tolist() == [0, 1, 0]


def test_features_compare_real_ids_and_the_model_reads_known_ones() -> None:
    """A new category matches only itself, two items of one new brand share it, and the
    model never sees an index beyond what it was trained with."""
    table = _table()
    new = [
        RankingItem(40, "drone", "drones", "skyco", 100.0),
        RankingItem(50, "vinyl", "records", "spinz", 20.0),
        RankingItem(60, "drone two", "drones", "skyco", 120.0),
    ]
    extended, _ = with_items(table, new)
    vocabulary = (len(table.category_names), len(table.brand_names))
    features = FeatureBuilder(extended, model_vocabulary=vocabulary)
    rows, _ = extended.rows_of(np.array([40, 50, 60, 10]))
    history = [rows[:1]]  # one live item of a new category and brand
    batch = features.build(history, rows[1:][None, :], None)
    dense = dict(zip(DENSE, batch.dense.numpy().T, strict=True))
    assert dense["same_category"].tolist() == [0.0, 1.0, 0.0]  # records, drones, shoes
    assert dense["same_brand"].tolist() == [0.0, 1.0, 0.0]
    assert batch.candidate_categories.max().item() <= vocabulary[0]  # padding at most
    assert batch.candidate_brands.max().item() < vocabulary[1]
