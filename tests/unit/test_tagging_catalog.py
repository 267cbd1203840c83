"""Catalogue tags: per-tag thresholds, and the live (upsert/delete, copy-on-write) cache."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tagging.catalog_tags import STORED_TAGS, CatalogTags, LiveCatalogTags

NAMES = ["red", "blue", "cotton", "wool"]


def _table(ids: list[int], rows: list[list[float]]) -> CatalogTags:
    return CatalogTags.from_probabilities(np.array(ids), np.array(rows, np.float32), NAMES, 0.5)


def test_per_tag_thresholds_decide_and_keep_confidence_order() -> None:
    probs = np.array([[0.9, 0.35, 0.6, 0.2]], np.float32)
    thresholds = np.array([0.5, 0.3, 0.7, 0.1], np.float32)
    table = CatalogTags.from_probabilities(np.array([7]), probs, NAMES, thresholds)
    # cotton (0.6) is under its 0.7; blue (0.35) and wool (0.2) pass their low thresholds.
    [tags], known = table.lookup(np.array([7]), max_tags=10)
    assert known.tolist() == [True]
    assert [n for n, _ in tags] == ["red", "blue", "wool"]
    assert [c for _, c in tags] == pytest.approx([0.9, 0.35, 0.2])
    assert table.tag_index.shape == (1, STORED_TAGS)
    assert table.multi_hot(np.array([7, 8])).tolist() == [[1, 1, 0, 1], [0, 0, 0, 0]]


def test_upsert_adds_and_replaces_items_and_delete_removes_them() -> None:
    live = LiveCatalogTags(_table([10, 20], [[0.9, 0, 0, 0], [0, 0.9, 0, 0]]))
    assert len(live) == 2 and 10 in live and 30 not in live
    live.upsert(_table([30, 20], [[0, 0, 0.8, 0], [0, 0, 0, 0.7]]))  # new 30, changed 20
    tags, known = live.lookup(np.array([30, 20, 10, 99]), max_tags=5)
    assert known.tolist() == [True, True, True, False]
    assert tags == [[("cotton", pytest.approx(0.8))], [("wool", pytest.approx(0.7))],
                    [("red", pytest.approx(0.9))]]  # fmt: skip
    assert len(live) == 3
    removed = live.delete([20, 30, 99])
    assert removed.tolist() == [20, 30]
    assert live.lookup(np.array([10, 20, 30]), 5)[1].tolist() == [True, False, False]
    assert len(live) == 1 and 20 not in live
    # A deleted base item comes back when upserted again.
    live.upsert(_table([20], [[0.6, 0, 0, 0]]))
    assert live.lookup(np.array([20]), 5)[0] == [[("red", pytest.approx(0.6))]]
    assert live.multi_hot(np.array([20, 30])).tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]


def test_upsert_rejects_another_vocabulary_and_duplicate_ids() -> None:
    live = LiveCatalogTags(_table([1], [[0.9, 0, 0, 0]]))
    other = CatalogTags.from_probabilities(np.array([2]), np.ones((1, 2)), ["a", "b"], 0.5)
    with pytest.raises(ValueError, match="vocabulary"):
        live.upsert(other)
    with pytest.raises(ValueError, match="duplicate"):
        live.upsert(_table([2, 2], [[0.9, 0, 0, 0], [0.9, 0, 0, 0]]))


def test_compaction_gives_the_same_answers() -> None:
    rng = np.random.default_rng(0)
    base_ids = list(range(1, 101))
    base = _table(base_ids, rng.random((100, 4)).tolist())
    compacting = LiveCatalogTags(base, compact_at=3)  # folds the overlay in often
    overlay_only = LiveCatalogTags(base, compact_at=10**9)
    for step in range(20):
        ids = rng.choice(np.arange(1, 150), size=4, replace=False)
        table = _table(ids.tolist(), rng.random((4, 4)).tolist())
        gone = rng.choice(np.arange(1, 150), size=2, replace=False)
        for live in (compacting, overlay_only):
            live.upsert(table)
            live.delete(gone)
        probe = np.arange(0, 160)
        tags_a, known_a = compacting.lookup(probe, 8)
        tags_b, known_b = overlay_only.lookup(probe, 8)
        assert tags_a == tags_b, step
        np.testing.assert_array_equal(known_a, known_b)
        assert len(compacting) == len(overlay_only)


def test_readers_see_whole_snapshots_while_a_writer_upserts() -> None:
    """Each upsert writes one batch of items whose tags all carry the batch number as
    confidence; a reader must never see two batch numbers in one lookup of a batch."""
    live = LiveCatalogTags(CatalogTags.empty(NAMES), compact_at=8)
    ids = np.arange(1, 33)
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            tags, known = live.lookup(ids, 1)
            if known.any() and not known.all():
                errors.append("partial batch visible")
            seen = {round(t[0][1], 3) for t in tags if t}
            if len(seen) > 1:
                errors.append(f"mixed batches {seen}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        for batch in range(1, 200):
            probs = np.zeros((len(ids), 4), np.float32)
            probs[:, batch % 4] = batch / 1000
            live.upsert_probabilities(ids, probs, 0.0)
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not errors, errors[:3]
    assert live.lookup(ids[:1], 1)[0] == [[(NAMES[199 % 4], pytest.approx(0.199))]]
