"""The filtered-search guarantee: exactly k distinct eligible rows, never -1, never an
excluded one, best first — for every index kind, checked over random filters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.index import IndexConfig, ItemIndex, IVFConfig, build_index
from tests.unit.overlap_spy import OverlapSpy

N, DIM, CATEGORIES = 600, 16, 6
RNG = np.random.default_rng(3)
EMBEDDINGS = RNG.normal(size=(N, DIM)).astype(np.float32)
EMBEDDINGS /= np.linalg.norm(EMBEDDINGS, axis=1, keepdims=True)
ITEM_CATEGORIES = RNG.integers(0, CATEGORIES, N)
# nprobe < nlist: the IVF index really is approximate, so the exact fallback is exercised.
CONFIGS = {
    kind: IndexConfig(kind, ivf=IVFConfig(nlist=8, nprobe=2)) for kind in ("flat", "ivf", "hnsw")
}
INDEXES = {
    kind: ItemIndex(build_index(EMBEDDINGS, config), EMBEDDINGS, ITEM_CATEGORIES, CATEGORIES)
    for kind, config in CONFIGS.items()
}


def _brute_force(query: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    eligible = np.flatnonzero(mask)
    scores = EMBEDDINGS[eligible] @ query
    return eligible[np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize("kind", sorted(INDEXES))
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 700),
    n_excluded=st.integers(0, 500),
    include=st.sets(st.integers(0, CATEGORIES - 1), max_size=3),
    exclude=st.sets(st.integers(0, CATEGORIES - 1), max_size=2),
)
def test_exact_k_eligible(
    kind: str, seed: int, k: int, n_excluded: int, include: set[int], exclude: set[int]
) -> None:
    index = INDEXES[kind]
    rng = np.random.default_rng(seed)
    query = EMBEDDINGS[rng.integers(N)] + 0.1 * rng.normal(size=DIM).astype(np.float32)
    excluded = rng.choice(N, n_excluded, replace=False)
    inc, exc = np.array(sorted(include), np.int64), np.array(sorted(exclude), np.int64)
    mask = index.eligible_mask(excluded, inc, exc)

    result = index.search(query, k, excluded, inc, exc)

    expected_len = min(k, int(mask.sum()))
    assert len(result.rows) == expected_len
    assert result.exhausted == (expected_len < k)
    assert len(np.unique(result.rows)) == len(result.rows)
    assert (result.rows >= 0).all()
    assert mask[result.rows].all()
    assert (np.diff(result.scores) <= 1e-6).all()
    if kind == "flat":  # exact index: the very same top-k as brute force
        np.testing.assert_array_equal(np.sort(result.rows), np.sort(_brute_force(query, mask, k)))


def test_search_many_excludes_per_row() -> None:
    index = INDEXES["flat"]
    queries = EMBEDDINGS[:3]
    exclusions = [np.array([0]), np.array([1, 2]), np.array([], np.int64)]
    rows = index.search_many(queries, 5, exclusions)
    assert rows.shape == (3, 5)
    assert 0 not in rows[0] and rows[2][0] == 2
    assert not set(rows[1]) & {1, 2}


def test_gpu_placement_without_gpu_is_a_clear_error(tmp_path) -> None:
    import faiss as _faiss

    from retrieval.index import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    _faiss.write_index(build_index(EMBEDDINGS, "flat"), str(tmp_path / "i.faiss"))
    with pytest.raises(RuntimeError, match="no GPU"):
        ItemIndex.load(tmp_path / "i.faiss", EMBEDDINGS, ITEM_CATEGORIES, CATEGORIES, device="gpu")


def test_searches_on_a_gpu_placed_index_take_turns() -> None:
    """FAISS GPU indexes abort the process under concurrent searches (seen on an H100 with
    two executor workers): an index placed on the GPU, and the copies that serve its live
    segment, must search one at a time. On CPU, concurrent searches are fine and allowed."""
    from retrieval.segment import LiveSegment

    live = LiveSegment.empty(N, EMBEDDINGS.shape[1], [f"c{i}" for i in range(CATEGORIES)])
    for on_gpu in (True, False):
        spy = OverlapSpy(build_index(EMBEDDINGS, "flat"))
        index = ItemIndex(spy, EMBEDDINGS, ITEM_CATEGORIES, CATEGORIES, on_gpu=on_gpu)
        # The single search on a live-segment copy against the evaluation batch path.
        with ThreadPoolExecutor(2) as pool:
            single = pool.submit(index.with_live(live).search, EMBEDDINGS[0], 10)
            many = pool.submit(index.search_many, EMBEDDINGS[:1], 10, [np.empty(0, np.int64)])
            results = [single.result().rows, many.result()[0]]
        assert spy.overlapped is not on_gpu
        np.testing.assert_array_equal(results[0], results[1])
