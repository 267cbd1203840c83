"""Items added or changed after training, as rows the ranker's features can read.

The ranker has no item-id embeddings: everything it knows about a candidate is its
category, brand, price bucket, tags and popularity, all columns of the ItemTable. A new
product therefore ranks like any other once it has a row. Categories and brands first seen
here are appended to the table's names, so the features compare real ids (two items of a
new brand share it, a new category matches only itself); the model itself reads what it
never saw as its padding category / the most common brand (ranking/features.py,
`model_vocabulary`). Unknown tags are dropped; popularity starts at 0.

`with_items` returns a new table (copy-on-write): the ranking service swaps it in with its
model as one reference, so a request scores against one consistent catalogue. The copy is
O(catalogue) per call — a few ms at 100k items; batch updates (≤ 1000 items per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recdata.items import ItemTable, encode_text, indices_adding_new, price_buckets


@dataclass(frozen=True)
class RankingItem:
    item_id: int
    title: str
    category: str
    brand: str
    price: float
    tags: tuple[str, ...] = ()


def with_items(items: ItemTable, new: Sequence[RankingItem]) -> tuple[ItemTable, int]:
    """(a table serving `new` too, how many of them were already in it). Changed items
    keep their row (and their popularity); new ones are appended."""
    ids = np.array([item.item_id for item in new], np.int64)
    rows, known = items.rows_of(ids)
    category_names, categories = indices_adding_new(items.category_names, [i.category for i in new])
    brand_names, brands = indices_adding_new(items.brand_names, [i.brand for i in new])
    prices = price_buckets(np.array([i.price for i in new], np.float64), items.price_edges)
    texts = encode_text([f"{i.brand} {i.title} {i.category}" for i in new])
    tag_matrix = None
    if items.tag_matrix is not None:
        tag_index = {name: j for j, name in enumerate(items.tag_names)}
        tag_matrix = np.zeros((len(new), items.tag_matrix.shape[1]), items.tag_matrix.dtype)
        for r, item in enumerate(new):
            for tag in item.tags:
                if tag in tag_index:
                    tag_matrix[r, tag_index[tag]] = 1

    def merged(column: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.concatenate([column, values[~known]])
        out[rows[known]] = values[known]
        return out

    titles = list(items.titles)
    for r, item in zip(rows[known], np.array(new, dtype=object)[known], strict=True):
        titles[r] = item.title
    titles += [item.title for item, k in zip(new, known, strict=True) if not k]
    external_ids = None
    if items.external_ids is not None:
        external_ids = list(items.external_ids) + [
            str(item.item_id) for item, k in zip(new, known, strict=True) if not k
        ]
    table = ItemTable(
        item_ids=np.concatenate([items.item_ids, ids[~known]]),
        titles=titles,
        category_names=category_names,
        categories=merged(items.categories, categories),
        brand_names=brand_names,
        brands=merged(items.brands, brands),
        price_edges=items.price_edges,
        price_buckets=merged(items.price_buckets, prices),
        text_tokens=merged(items.text_tokens, texts),
        popularity=np.concatenate([items.popularity, np.zeros(int((~known).sum()), np.float32)]),
        tag_names=items.tag_names,
        tag_matrix=None if tag_matrix is None else merged(items.tag_matrix, tag_matrix),
        external_ids=external_ids,
    )
    return table, int(known.sum())
