"""Live catalogue rows for the ranker: appended or replaced in a copy, unknown values mapped
to what the trained model can read, the original table untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
    pad = len(table.category_names)  # "boots" was never seen: the padding category
    assert extended.categories[3] == pad
    assert extended.category_names[extended.categories[1]] == "shoes"
    assert extended.brand_names[extended.brands[3]] == "acme"  # unknown brand: most common
    assert extended.brand_names[extended.brands[1]] == "zed"
    assert extended.tag_matrix is not None
    assert extended.tag_matrix[3].tolist() == [0, 1, 0]
    assert extended.tag_matrix[1].tolist() == [1, 0, 0]
    assert extended.popularity.tolist() == [5.0, 3.0, 1.0, 0.0]  # changed keeps its own
    assert extended.titles[1] == "blue shirt v2"
    # The served table is untouched (requests in flight keep reading it).
    assert table.item_ids.tolist() == [10, 20, 30] and table.titles[1] == "blue shirt"
    assert table.tag_matrix is not None and table.tag_matrix[1].tolist() == [0, 1, 0]
