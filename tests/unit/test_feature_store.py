"""The gateway's feature store: the recent window the models read, the seen set it
excludes, and their round trip through the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recdata.feature_store import MAX_STORED_HISTORY, MAX_STORED_SEEN, UserHistoryStore
from recdata.items import ItemTable
from recdata.split import UserSequences
from recdata.synthetic import generate


def _items() -> ItemTable:
    dataset = generate(num_items=MAX_STORED_SEEN + 500, num_users=5, mean_events_per_user=2, seed=3)
    return ItemTable.from_frame(dataset.items)


def test_seen_items_reach_past_the_recent_window(tmp_path: Path) -> None:
    items = _items()
    rng = np.random.default_rng(0)
    heavy = rng.permutation(len(items.item_ids))[: MAX_STORED_HISTORY + 300]
    repeated = np.concatenate([heavy, heavy[:10]])  # the first ten seen again at the end
    store = UserHistoryStore.from_sequences(
        UserSequences(["heavy", "light"], [repeated, heavy[:3]]), items
    )
    for loaded in (store, _round_trip(store, tmp_path)):
        recent = loaded.recent_items("heavy")
        assert len(recent) == MAX_STORED_HISTORY
        np.testing.assert_array_equal(recent, items.item_ids[repeated[-MAX_STORED_HISTORY:]])
        np.testing.assert_array_equal(loaded.seen_items("heavy"), np.sort(items.item_ids[heavy]))
        light = np.sort(items.item_ids[heavy[:3]])
        np.testing.assert_array_equal(loaded.seen_items("light"), light)
        assert len(loaded.seen_items("nobody")) == 0


def test_the_seen_set_keeps_the_newest_distinct_items(tmp_path: Path) -> None:
    items = _items()
    rows = np.arange(MAX_STORED_SEEN + 100)
    sequence = np.concatenate([rows, rows[:5]])  # the five oldest seen again, most recently
    store = _round_trip(
        UserHistoryStore.from_sequences(UserSequences(["u"], [sequence]), items), tmp_path
    )
    seen = store.seen_items("u")
    assert len(seen) == MAX_STORED_SEEN
    newest = np.concatenate([rows[:5], rows[-(MAX_STORED_SEEN - 5) :]])
    np.testing.assert_array_equal(seen, np.sort(items.item_ids[newest]))


def test_a_store_written_without_seen_sets_excludes_its_histories(tmp_path: Path) -> None:
    history = np.array([30, 10, 20, 10], np.int64)
    np.savez(
        tmp_path / "histories.npz",
        user_ids=np.array(["u"]),
        offsets=np.array([0, 4]),
        item_ids=history,
    )
    store = UserHistoryStore.load(tmp_path)
    np.testing.assert_array_equal(store.recent_items("u"), history)
    np.testing.assert_array_equal(store.seen_items("u"), [10, 20, 30])


def _round_trip(store: UserHistoryStore, tmp_path: Path) -> UserHistoryStore:
    store.save(tmp_path / "users")
    return UserHistoryStore.load(tmp_path / "users")
