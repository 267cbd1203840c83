"""The exact-k guarantee with live catalogue changes: live items merged in, dead base rows
never returned, new categories filterable — over random segments, filters and index kinds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.index import IndexConfig, ItemIndex, IVFConfig, build_index
from retrieval.segment import LiveSegment, merge_top

N, DIM, CATEGORIES, NEW_CATEGORIES = 500, 16, 5, 2
RNG = np.random.default_rng(11)
EMBEDDINGS = RNG.normal(size=(N, DIM)).astype(np.float32)
EMBEDDINGS /= np.linalg.norm(EMBEDDINGS, axis=1, keepdims=True)
ITEM_CATEGORIES = RNG.integers(0, CATEGORIES, N)
NAMES = [f"c{i}" for i in range(CATEGORIES + NEW_CATEGORIES)]
CONFIGS = {
    kind: IndexConfig(kind, ivf=IVFConfig(nlist=8, nprobe=2)) for kind in ("flat", "ivf", "hnsw")
}
INDEXES = {
    kind: ItemIndex(build_index(EMBEDDINGS, config), EMBEDDINGS, ITEM_CATEGORIES, CATEGORIES)
    for kind, config in CONFIGS.items()
}


def _segment(rng: np.random.Generator, n_live: int, n_dead: int) -> LiveSegment:
    live = rng.normal(size=(n_live, DIM)).astype(np.float32)
    live /= np.maximum(np.linalg.norm(live, axis=1, keepdims=True), 1e-6)
    dead = np.zeros(N, bool)
    dead[rng.choice(N, n_dead, replace=False)] = True
    return LiveSegment(
        base_size=N,
        ids=10_000 + rng.choice(5_000, n_live, replace=False).astype(np.int64),
        embeddings=live,
        categories=rng.integers(0, CATEGORIES + NEW_CATEGORIES, n_live).astype(np.int64),
        category_names=tuple(NAMES),
        dead=dead,
    )


@pytest.mark.parametrize("kind", sorted(INDEXES))
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 600),
    n_live=st.integers(0, 80),
    n_dead=st.integers(0, 450),
    n_excluded=st.integers(0, 200),
    include=st.sets(st.integers(0, CATEGORIES + NEW_CATEGORIES - 1), max_size=3),
    exclude=st.sets(st.integers(0, CATEGORIES + NEW_CATEGORIES - 1), max_size=2),
)
def test_exact_k_with_live_changes(
    kind: str,
    seed: int,
    k: int,
    n_live: int,
    n_dead: int,
    n_excluded: int,
    include: set[int],
    exclude: set[int],
) -> None:
    rng = np.random.default_rng(seed)
    segment = _segment(rng, n_live, n_dead)
    index = INDEXES[kind].with_live(segment)
    all_vectors = np.concatenate([EMBEDDINGS, segment.embeddings])
    all_categories = np.concatenate([ITEM_CATEGORIES, segment.categories])
    excluded = rng.choice(N + n_live, min(n_excluded, N + n_live), replace=False)
    inc, exc = np.array(sorted(include), np.int64), np.array(sorted(exclude), np.int64)
    eligible = np.ones(N + n_live, bool)
    if len(inc):
        eligible &= np.isin(all_categories, inc)
    eligible &= ~np.isin(all_categories, exc)
    eligible[excluded] = False
    eligible[:N] &= ~segment.dead
    query = all_vectors[rng.integers(N + max(n_live, 1) - 1)]

    result = index.search(query, k, excluded, inc, exc)

    expected = min(k, int(eligible.sum()))
    assert len(result.rows) == expected
    assert result.exhausted == (expected < k)
    assert len(np.unique(result.rows)) == len(result.rows)
    assert (result.rows >= 0).all() and eligible[result.rows].all()
    assert (np.diff(result.scores) <= 1e-6).all()
    if kind == "flat":  # exact index: the very best eligible, base or live
        best = np.sort(all_vectors[eligible] @ query)[::-1][:expected]
        np.testing.assert_allclose(np.sort(result.scores)[::-1], best, rtol=1e-5, atol=1e-5)


def test_vectors_and_rows_of_cover_live_items() -> None:
    rng = np.random.default_rng(0)
    segment = _segment(rng, 10, 3)
    index = INDEXES["flat"].with_live(segment)
    rows = np.array([0, N + 4, 7, N + 9])
    np.testing.assert_array_equal(index.vectors(rows)[1], segment.embeddings[4])
    np.testing.assert_array_equal(index.vectors(rows)[2], EMBEDDINGS[7])
    virtual, known = segment.rows_of(np.array([segment.ids[2], -5]))
    assert known.tolist() == [True, False] and virtual[0] == N + 2


def test_with_live_shares_the_index_and_leaves_the_original_alone() -> None:
    base = INDEXES["flat"]
    segment = _segment(np.random.default_rng(1), 5, 10)
    live = base.with_live(segment)
    assert live.index is base.index and live.embeddings is base.embeddings
    assert base.live is None
    dead = segment.dead_rows
    assert not np.isin(live.search(EMBEDDINGS[dead[0]], N).rows, dead).any()
    assert dead[0] in base.search(EMBEDDINGS[dead[0]], 5).rows


def test_segment_for_another_index_is_refused() -> None:
    segment = LiveSegment.empty(N + 1, DIM, NAMES)
    with pytest.raises(ValueError, match="base rows"):
        INDEXES["flat"].with_live(segment)


def test_merge_top_keeps_the_best_of_both() -> None:
    rows, scores = merge_top(
        np.array([1, 2]), np.array([0.9, 0.5], np.float32), np.array([10]), np.array([0.7]), 2
    )
    assert rows.tolist() == [1, 10] and scores.tolist() == pytest.approx([0.9, 0.7])
