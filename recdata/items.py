"""The catalogue as dense columns: the item id map and the features every model reads.

Row `r` of every array is one item. External ids are int64 and cross the API; rows are
internal. Lookups are vectorised (sorted ids + searchsorted) because they sit on the
serving hot path for hundreds of candidates per request.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

NUM_PRICE_BUCKETS = 10
TEXT_TOKENS = 16
TEXT_BUCKETS = 1 << 16


def _tokens(text: str) -> list[int]:
    """Stable hashed word tokens (1..TEXT_BUCKETS-1; 0 pads)."""
    words = text.lower().replace("-", " ").split()[:TEXT_TOKENS]
    return [1 + zlib.crc32(w.encode()) % (TEXT_BUCKETS - 1) for w in words]


def encode_text(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), TEXT_TOKENS), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = _tokens(text)
        out[row, : len(tokens)] = tokens
    return out


def known_indices(names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Indices in `names` of the `wanted` ones it has; unknown names are ignored."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[w] for w in wanted if w in index], dtype=np.int64)


def indices_adding_new(names: Sequence[str], values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(names with the values first seen here appended, the index of every value)."""
    extended = list(names)
    index = {name: i for i, name in enumerate(extended)}
    out = np.empty(len(values), np.int64)
    for j, value in enumerate(values):
        if value not in index:
            index[value] = len(extended)
            extended.append(value)
        out[j] = index[value]
    return extended, out


def price_buckets(prices: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, prices, side="right").astype(np.int64)


@dataclass
class ItemTable:
    item_ids: np.ndarray  # int64 (N,)
    titles: list[str]
    category_names: list[str]
    categories: np.ndarray  # int64 (N,) index into category_names
    brand_names: list[str]
    brands: np.ndarray  # int64 (N,)
    price_edges: np.ndarray  # float64 (NUM_PRICE_BUCKETS-1,) quantile edges
    price_buckets: np.ndarray  # int64 (N,)
    text_tokens: np.ndarray  # int64 (N, TEXT_TOKENS) hashed title/brand/category words
    popularity: np.ndarray  # float32 (N,) training interaction counts
    tag_names: list[str] = field(default_factory=list)
    tag_matrix: np.ndarray | None = None  # uint8 (N, len(tag_names)) catalogue tags
    # The source's own ids (string SKUs …) when the loader had to map them to ints.
    external_ids: list[str] | None = None
    _sorted_ids: np.ndarray = field(init=False, repr=False)
    _sorted_rows: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Own writable copies: pandas (copy-on-write) hands out read-only views, and torch
        # warns on every from_numpy of those.
        for name in (
            "item_ids",
            "categories",
            "brands",
            "price_buckets",
            "text_tokens",
            "popularity",
        ):
            setattr(self, name, np.array(getattr(self, name)))
        order = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[order]
        self._sorted_rows = order.astype(np.int64)
        if len(self._sorted_ids) > 1 and np.any(self._sorted_ids[1:] == self._sorted_ids[:-1]):
            raise ValueError("item ids must be unique")

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_frame(cls, items: pd.DataFrame, popularity: np.ndarray | None = None) -> ItemTable:
        category_names = sorted(items["category"].astype(str).unique())
        brand_names = sorted(items["brand"].astype(str).unique())
        prices = items["price"].to_numpy(dtype=np.float64)
        edges = np.quantile(prices, np.linspace(0, 1, NUM_PRICE_BUCKETS + 1)[1:-1])
        cat_index = {c: i for i, c in enumerate(category_names)}
        brand_index = {b: i for i, b in enumerate(brand_names)}
        texts = (
            items["brand"].astype(str)
            + " "
            + items["title"].astype(str)
            + " "
            + items["category"].astype(str)
        ).tolist()
        n = len(items)
        return cls(
            item_ids=items["item_id"].to_numpy(dtype=np.int64),
            titles=items["title"].astype(str).tolist(),
            external_ids=(
                items["external_id"].astype(str).tolist()
                if "external_id" in items.columns
                else None
            ),
            category_names=category_names,
            categories=items["category"].astype(str).map(cat_index).to_numpy(dtype=np.int64),
            brand_names=brand_names,
            brands=items["brand"].astype(str).map(brand_index).to_numpy(dtype=np.int64),
            price_edges=edges,
            price_buckets=price_buckets(prices, edges),
            text_tokens=encode_text(texts),
            popularity=(
                np.zeros(n, np.float32) if popularity is None else popularity.astype(np.float32)
            ),
        )

    def rows_of(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows for external ids, and a mask of which ids are known (unknown rows are 0)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(self._sorted_ids) == 0 or ids.size == 0:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        pos = np.searchsorted(self._sorted_ids, ids)
        pos = np.minimum(pos, len(self._sorted_ids) - 1)
        known = self._sorted_ids[pos] == ids
        rows = np.where(known, self._sorted_rows[pos], 0)
        return rows, known

    def category_rows(self, names: list[str]) -> np.ndarray:
        """Category indices for names; unknown names are ignored (they match no item)."""
        return known_indices(self.category_names, names)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "item_ids": self.item_ids,
            "categories": self.categories,
            "brands": self.brands,
            "price_edges": self.price_edges,
            "price_buckets": self.price_buckets,
            "text_tokens": self.text_tokens,
            "popularity": self.popularity,
        }
        if self.tag_matrix is not None:
            arrays["tag_matrix"] = self.tag_matrix
        np.savez(directory / "items.npz", **arrays)
        meta = {
            "titles": self.titles,
            "external_ids": self.external_ids,
            "category_names": self.category_names,
            "brand_names": self.brand_names,
            "tag_names": self.tag_names,
        }
        (directory / "items.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> ItemTable:
        arrays = np.load(directory / "items.npz")
        meta = json.loads((directory / "items.json").read_text())
        return cls(
            item_ids=arrays["item_ids"],
            titles=meta["titles"],
            external_ids=meta.get("external_ids"),
            category_names=meta["category_names"],
            categories=arrays["categories"],
            brand_names=meta["brand_names"],
            brands=arrays["brands"],
            price_edges=arrays["price_edges"],
            price_buckets=arrays["price_buckets"],
            text_tokens=arrays["text_tokens"],
            popularity=arrays["popularity"],
            tag_names=meta["tag_names"],
            tag_matrix=arrays.get("tag_matrix"),
        )
