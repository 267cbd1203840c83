"""Upsert and delete on a real trained retriever: new items retrievable without retraining,
deleted ones never returned, snapshots independent, batched path equal to the single one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.batch import RetrievalQuery, retrieve_batch
from retrieval.live_catalogue import (
    CatalogueFull,
    ItemContent,
    delete_items,
    embed_contents,
    upsert_items,
)
from retrieval.retriever import Retriever

NEW_ID = 9_000_001


@pytest.fixture(scope="module")
def retriever(artifacts: Path) -> Retriever:
    return Retriever.load(artifacts, device="cpu")


def _content_of(retriever: Retriever, row: int, item_id: int, **changes: object) -> ItemContent:
    items = retriever.items
    fields = {
        "item_id": item_id,
        "title": items.titles[row],
        "category": items.category_names[items.categories[row]],
        "brand": items.brand_names[items.brands[row]],
        "price": 0.0,
    }
    fields.update(changes)
    return ItemContent(**fields)  # type: ignore[arg-type]


def _user_history(retriever: Retriever) -> np.ndarray:
    return retriever.items.item_ids[np.argsort(-retriever.items.popularity)[:8]]


def test_a_new_item_is_retrievable_from_its_content(retriever: Retriever) -> None:
    history = _user_history(retriever)
    top_row = int(retriever.items.rows_of(retriever.retrieve(history, 1).item_ids)[0][0])
    clone = _content_of(retriever, top_row, NEW_ID)
    updated, outcome = upsert_items(retriever, [clone])
    assert (outcome.inserted, outcome.updated, outcome.live_items) == (1, 0, 1)

    # Same content as the user's best match, no trained id vector: the item tower alone
    # puts it in the top 5 % of the catalogue for this user, so retrieval returns it.
    user = retriever.user_vector(retriever.items.rows_of(history)[0])
    assert updated.index.live is not None
    new_score = updated.index.live.embeddings[0] @ user
    assert (retriever.index.embeddings @ user > new_score).mean() < 0.05
    assert NEW_ID in updated.retrieve(history, 200).item_ids
    assert NEW_ID not in retriever.retrieve(history, 200).item_ids  # the old snapshot


def test_unknown_category_and_brand_are_filterable(retriever: Retriever) -> None:
    item = ItemContent(NEW_ID, "solar lantern waterproof", "camping gear", "NewBrand", 12.5)
    updated, _ = upsert_items(retriever, [item])
    result = updated.retrieve(_user_history(retriever), 5, include_categories=["camping gear"])
    assert result.item_ids.tolist() == [NEW_ID]
    assert result.exhausted  # one eligible item, five asked for
    excluded = updated.retrieve(
        _user_history(retriever), len(retriever.items), exclude_categories=["camping gear"]
    )
    assert NEW_ID not in excluded.item_ids


def test_deleted_items_never_come_back(retriever: Retriever) -> None:
    history = _user_history(retriever)
    before = retriever.retrieve(history, 50).item_ids
    gone = before[:10].tolist()
    updated, outcome = delete_items(retriever, [*gone, 123456789])
    assert outcome.deleted == 10 and outcome.not_found == [123_456_789]

    n = len(retriever.items)
    everything = updated.retrieve(history, n)
    assert not np.isin(everything.item_ids, gone).any()
    assert len(everything.item_ids) == n - 10 - len(np.unique(history)) or everything.exhausted
    after = updated.retrieve(history, 50)
    assert len(after.item_ids) == 50 and not np.isin(after.item_ids, gone).any()
    cold = updated.retrieve(np.array([], np.int64), n)  # the popular path too
    assert not np.isin(cold.item_ids, gone).any()


def test_changed_item_serves_its_new_version_once(retriever: Retriever) -> None:
    row = 3
    item_id = int(retriever.items.item_ids[row])
    new_category = retriever.items.category_names[
        (retriever.items.categories[row] + 1) % len(retriever.items.category_names)
    ]
    changed = _content_of(retriever, row, item_id, category=new_category)
    updated, outcome = upsert_items(retriever, [changed])
    assert (outcome.inserted, outcome.updated) == (0, 1)

    result = updated.retrieve(
        _user_history(retriever), len(retriever.items), include_categories=[new_category]
    )
    assert result.item_ids.tolist().count(item_id) == 1
    expected = embed_contents(retriever, [changed], retriever.category_names)[0]
    assert updated.index.live is not None
    live_row, _ = updated.index.live.rows_of(np.array([item_id]))
    np.testing.assert_allclose(updated.index.vectors(live_row)[0], expected, rtol=1e-6)
    # Re-upserting replaces the live version instead of adding another.
    _again, outcome = upsert_items(updated, [changed])
    assert outcome.live_items == 1 and outcome.updated == 1


def test_deleted_then_restocked(retriever: Retriever) -> None:
    item_id = int(retriever.items.item_ids[5])
    gone, _ = delete_items(retriever, [item_id])
    back, outcome = upsert_items(gone, [_content_of(retriever, 5, item_id)])
    assert outcome.inserted == 1
    ids = back.retrieve(_user_history(retriever), len(retriever.items)).item_ids
    assert ids.tolist().count(item_id) == 1


def test_limits_and_bad_input(retriever: Retriever) -> None:
    items = [ItemContent(NEW_ID + i, f"thing {i}", "camping gear") for i in range(3)]
    with pytest.raises(CatalogueFull, match="limit 2"):
        upsert_items(retriever, items, max_live_items=2)
    with pytest.raises(ValueError, match="distinct"):
        upsert_items(retriever, [items[0], items[0]])


def test_batched_path_equals_single_path_with_live_changes(retriever: Retriever) -> None:
    rng = np.random.default_rng(4)
    new = [
        _content_of(retriever, int(r), NEW_ID + i)
        for i, r in enumerate(rng.choice(len(retriever.items), 30, replace=False))
    ]
    updated, _ = upsert_items(retriever, new)
    updated, _ = delete_items(updated, retriever.items.item_ids[:40].tolist())
    queries = [
        RetrievalQuery(
            retriever.items.item_ids[rng.choice(len(retriever.items), 6)],
            100,
            exclude_item_ids=np.array([NEW_ID + 1, NEW_ID + 2]),
        )
        for _ in range(8)
    ]
    batched = retrieve_batch(updated, queries, bitwise=True)
    for query, answer in zip(queries, batched, strict=True):
        single = updated.retrieve(query.recent_item_ids, query.k, query.exclude_item_ids)
        assert not isinstance(answer, Exception)
        assert answer.item_ids.tolist() == single.item_ids.tolist()
        assert not np.isin(answer.item_ids, retriever.items.item_ids[:40]).any()
        assert not np.isin(answer.item_ids, [NEW_ID + 1, NEW_ID + 2]).any()
