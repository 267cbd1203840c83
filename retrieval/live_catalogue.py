"""Catalogue changes without retraining: upsert (new or changed products) and delete.

A new product is embedded by the trained item tower from its content (category, brand,
price bucket, title words) with its id vector switched off: training drops id vectors at
random (`id_dropout`) so that content-only embeddings are meaningful. A changed product
keeps its trained id vector and gets its new content. Categories and brands the model never
saw contribute nothing (masked), but a new category name works in filters at once.

Each operation returns a *new* Retriever sharing the model, the FAISS index and the
catalogue with the old one (see retrieval/segment.py): the caller publishes it with one
assignment, so concurrent searches see either the old or the new catalogue, never half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recdata.items import encode_text, indices_adding_new, price_buckets
from retrieval.retriever import Retriever
from retrieval.segment import LiveSegment

DEFAULT_MAX_LIVE_ITEMS = 100_000


class CatalogueFull(Exception):
    """More live items than configured: retrain (which folds them into the index)."""


@dataclass(frozen=True)
class ItemContent:
    """What the item tower reads about a product (the fields the catalogue keeps)."""

    item_id: int
    title: str
    category: str
    brand: str = ""
    price: float = 0.0


@dataclass(frozen=True)
class UpsertOutcome:
    inserted: int  # ids that were not being served before
    updated: int  # ids that were served and now have new content
    live_items: int  # items in the live segment after the change
    removed_rows: int  # base rows no longer served (deleted or superseded)


@dataclass(frozen=True)
class DeleteOutcome:
    deleted: int
    not_found: list[int]  # ids that were not being served


def live_segment(retriever: Retriever) -> LiveSegment:
    live = retriever.index.live
    if live is not None:
        return live
    return LiveSegment.empty(retriever.index.size, retriever.index.dim, retriever.category_names)


@torch.inference_mode()
def embed_contents(
    retriever: Retriever, contents: Sequence[ItemContent], category_names: Sequence[str]
) -> np.ndarray:
    """(n, d) item-tower embeddings from content; known ids keep their trained id vector."""
    items = retriever.items
    model = retriever.model
    base_rows, in_base = items.rows_of(np.array([c.item_id for c in contents], np.int64))
    category_index = {name: i for i, name in enumerate(category_names)}
    brand_index = {name: i for i, name in enumerate(items.brand_names)}
    trained_categories = model.cfg.num_categories
    categories = np.array([category_index[c.category] for c in contents], np.int64)
    brands = np.array([brand_index.get(c.brand, -1) for c in contents], np.int64)
    texts = [f"{c.brand} {c.title} {c.category}" for c in contents]
    prices = price_buckets(np.array([c.price for c in contents], np.float64), items.price_edges)
    known_category = categories < trained_categories
    known_brand = brands >= 0
    vectors = model.items(
        torch.from_numpy(np.where(in_base, base_rows, 0)),
        torch.from_numpy(np.where(known_category, categories, 0)),
        torch.from_numpy(np.where(known_brand, brands, 0)),
        torch.from_numpy(prices),
        torch.from_numpy(encode_text(texts)),
        use_id=torch.from_numpy(in_base.astype(np.float32)),
        use_category=torch.from_numpy(known_category.astype(np.float32)),
        use_brand=torch.from_numpy(known_brand.astype(np.float32)),
    )
    return vectors.numpy().astype(np.float32)


def upsert_items(
    retriever: Retriever,
    contents: Sequence[ItemContent],
    max_live_items: int = DEFAULT_MAX_LIVE_ITEMS,
) -> tuple[Retriever, UpsertOutcome]:
    """A retriever serving `contents` as well (replacing earlier versions of those ids).
    Ids must be distinct within one call."""
    ids = np.array([c.item_id for c in contents], np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("item ids must be distinct within one upsert")
    live = live_segment(retriever)
    base_rows, in_base = retriever.items.rows_of(ids)
    _, in_live = live.rows_of(ids)
    served_base = in_base & ~live.dead[np.where(in_base, base_rows, 0)]
    was_served = served_base | in_live

    names, categories = indices_adding_new(live.category_names, [c.category for c in contents])
    vectors = embed_contents(retriever, contents, names)

    keep = ~np.isin(live.ids, ids)  # earlier live versions of these ids are replaced
    new_size = int(keep.sum()) + len(ids)
    if new_size > max_live_items:
        raise CatalogueFull(
            f"the live catalogue would hold {new_size} items (limit {max_live_items}); "
            "retrain to fold them into the index"
        )
    dead = live.dead.copy()
    dead[base_rows[in_base]] = True  # the base version of a changed item stops serving
    segment = LiveSegment(
        base_size=live.base_size,
        ids=np.concatenate([live.ids[keep], ids]),
        embeddings=np.concatenate([live.embeddings[keep], vectors]),
        categories=np.concatenate([live.categories[keep], categories]),
        category_names=tuple(names),
        dead=dead,
    )
    outcome = UpsertOutcome(
        inserted=int((~was_served).sum()),
        updated=int(was_served.sum()),
        live_items=len(segment),
        removed_rows=len(segment.dead_rows),
    )
    return retriever.with_index(retriever.index.with_live(segment)), outcome


def delete_items(retriever: Retriever, item_ids: Sequence[int]) -> tuple[Retriever, DeleteOutcome]:
    """A retriever that no longer returns `item_ids`; ids not being served are reported."""
    ids = np.unique(np.asarray(item_ids, np.int64))
    live = live_segment(retriever)
    base_rows, in_base = retriever.items.rows_of(ids)
    _, in_live = live.rows_of(ids)
    served_base = in_base & ~live.dead[np.where(in_base, base_rows, 0)]
    dead = live.dead.copy()
    dead[base_rows[in_base]] = True
    keep = ~np.isin(live.ids, ids)
    segment = LiveSegment(
        base_size=live.base_size,
        ids=live.ids[keep],
        embeddings=live.embeddings[keep],
        categories=live.categories[keep],
        category_names=live.category_names,
        dead=dead,
    )
    found = served_base | in_live
    outcome = DeleteOutcome(deleted=int(found.sum()), not_found=ids[~found].tolist())
    return retriever.with_index(retriever.index.with_live(segment)), outcome
