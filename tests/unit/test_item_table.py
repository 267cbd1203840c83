from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recdata.items import ItemTable


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [501, 7, 42],
            "title": ["Red Shoe", "Blue Hat", "Tent"],
            "description": ["", "", ""],
            "category": ["shoes", "hats", "tents"],
            "brand": ["A", "B", "A"],
            "price": [10.0, 20.0, 300.0],
            "tags": [["red"], ["blue"], []],
        }
    )


def test_rows_of_maps_external_ids_and_flags_unknown() -> None:
    table = ItemTable.from_frame(_items())
    rows, known = table.rows_of(np.array([42, 501, 8, 7, -3]))
    assert known.tolist() == [True, True, False, True, False]
    assert rows[known].tolist() == [2, 0, 1]


def test_duplicate_ids_are_rejected() -> None:
    frame = _items()
    frame.loc[1, "item_id"] = 501
    with pytest.raises(ValueError, match="unique"):
        ItemTable.from_frame(frame)


def test_save_load_round_trip(tmp_path: Path) -> None:
    table = ItemTable.from_frame(_items())
    table.save(tmp_path)
    loaded = ItemTable.load(tmp_path)
    np.testing.assert_array_equal(loaded.item_ids, table.item_ids)
    assert loaded.titles == table.titles
    assert loaded.category_names[loaded.categories[0]] == "shoes"
    np.testing.assert_array_equal(loaded.text_tokens, table.text_tokens)


def test_external_ids_survive_save_and_load(tmp_path: Path) -> None:
    frame = _items().assign(external_id=["SKU-A", "SKU-B", "85123A"])
    table = ItemTable.from_frame(frame)
    table.save(tmp_path)
    loaded = ItemTable.load(tmp_path)
    rows, _ = loaded.rows_of(np.array([7]))
    assert loaded.external_ids is not None
    assert loaded.external_ids[rows[0]] == "SKU-B"
    assert ItemTable.from_frame(_items()).external_ids is None
