"""The dataset contract every loader and generator must satisfy.

``items`` (one row per catalogue item):

- ``item_id``     int64, positive and unique; an external id, never a dense row index
- ``title``       str
- ``description`` str, one or two sentences of free text
- ``category``    str, exactly one category per item
- ``brand``       str
- ``price``       float
- ``tags``        list[str], ground-truth attribute labels, lowercase

``interactions`` (one row per user event):

- ``user_id``     str, opaque user key
- ``item_id``     int64, must exist in ``items.item_id``
- ``timestamp``   int64, unix seconds

Interactions are sorted by ``(user_id, timestamp)`` so per-user sequences can be read
off in one pass without re-sorting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "tags",
)
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")


# eq=False: dataclass equality would compare DataFrames with ==, which is ambiguous.
@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    items: pd.DataFrame
    interactions: pd.DataFrame

    def describe(self) -> str:
        """One-line summary for logs and CLI output."""
        return (
            f"{self.name}: {len(self.items)} items, "
            f"{self.interactions['user_id'].nunique()} users, "
            f"{len(self.interactions)} interactions, "
            f"{self.items['category'].nunique()} categories"
        )


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing required column(s): {', '.join(missing)}")


def _require_integer(frame: pd.DataFrame, column: str, what: str) -> None:
    if not pd.api.types.is_integer_dtype(frame[column].dtype):
        raise ValueError(f"{what}.{column} must be an integer column, got {frame[column].dtype}")


def _check_items(items: pd.DataFrame) -> None:
    _require_columns(items, ITEM_COLUMNS, "items")
    _require_integer(items, "item_id", "items")
    ids = items["item_id"]
    if (ids <= 0).any():
        raise ValueError("items.item_id must be positive")
    if ids.duplicated().any():
        dupes = ids[ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"items.item_id must be unique; duplicated e.g. {dupes}")


def _check_interactions(interactions: pd.DataFrame, item_ids: pd.Series) -> None:
    _require_columns(interactions, INTERACTION_COLUMNS, "interactions")
    _require_integer(interactions, "item_id", "interactions")
    _require_integer(interactions, "timestamp", "interactions")
    unknown = ~interactions["item_id"].isin(item_ids)
    if unknown.any():
        examples = interactions.loc[unknown, "item_id"].unique()[:5].tolist()
        raise ValueError(
            f"interactions reference {int(unknown.sum())} event(s) with unknown item_id, "
            f"e.g. {examples}"
        )
    users = interactions["user_id"].to_numpy(dtype=object)
    times = interactions["timestamp"].to_numpy(dtype=np.int64)
    same_user = users[1:] == users[:-1]
    ordered = users[1:] >= users[:-1]
    if not ordered.all() or (same_user & (times[1:] < times[:-1])).any():
        raise ValueError("interactions must be sorted by (user_id, timestamp)")


def validate_dataset(ds: Dataset) -> None:
    """Raise ValueError describing the first contract violation found, if any."""
    _check_items(ds.items)
    _check_interactions(ds.interactions, ds.items["item_id"])
