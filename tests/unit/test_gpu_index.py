"""GPU FAISS path: same results as CPU on an exact index. Skipped without a GPU build/GPU
(install the optional extra `recserve[gpu]` on a CUDA machine to run it)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval.index import ItemIndex, build_index, gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="no GPU FAISS build or no visible GPU"),
]


@pytest.mark.parametrize("shard", [False, True])
def test_gpu_exact_index_matches_cpu(tmp_path: Path, shard: bool) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5000, 32)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    categories = rng.integers(0, 4, len(embeddings))
    faiss.write_index(build_index(embeddings, "flat"), str(tmp_path / "items.faiss"))
    cpu = ItemIndex.load(tmp_path / "items.faiss", embeddings, categories, 4, device="cpu")
    gpu = ItemIndex.load(
        tmp_path / "items.faiss", embeddings, categories, 4, device="gpu", gpu_shard=shard
    )
    assert gpu.on_gpu and not cpu.on_gpu
    excluded = rng.choice(len(embeddings), 300, replace=False)
    for query in embeddings[:20]:
        a = cpu.search(query, 100, excluded)
        b = gpu.search(query, 100, excluded)
        np.testing.assert_array_equal(np.sort(a.rows), np.sort(b.rows))
        # category filters on the GPU go through the exact-scan fallback: still exact k
        c = gpu.search(query, 100, excluded, include_categories=np.array([1, 2]))
        assert len(c.rows) == 100 and np.isin(categories[c.rows], [1, 2]).all()


def test_gpu_index_serves_live_changes(tmp_path: Path) -> None:
    """Deleted rows and live items on a GPU index: exact k, nothing deleted."""
    from retrieval.segment import LiveSegment

    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(3000, 16)).astype(np.float32)
    categories = rng.integers(0, 3, len(embeddings))
    faiss.write_index(build_index(embeddings, "flat"), str(tmp_path / "items.faiss"))
    gpu = ItemIndex.load(tmp_path / "items.faiss", embeddings, categories, 3, device="gpu")
    dead = np.zeros(len(embeddings), bool)
    dead[rng.choice(len(embeddings), 500, replace=False)] = True
    live = LiveSegment(
        base_size=len(embeddings),
        ids=np.arange(10_000, 10_050, dtype=np.int64),
        embeddings=rng.normal(size=(50, 16)).astype(np.float32),
        categories=rng.integers(0, 3, 50).astype(np.int64),
        category_names=("a", "b", "c"),
        dead=dead,
    )
    index = gpu.with_live(live)
    for query in embeddings[:10]:
        result = index.search(query, 200)
        assert len(result.rows) == 200
        base = result.rows[result.rows < len(embeddings)]
        assert not dead[base].any()


def test_concurrent_searches_on_a_gpu_index_match_serial(tmp_path: Path) -> None:
    """Eight threads searching one GPU index at once (as the executor's workers and the
    micro-batcher do): no abort, and the answers a serial loop gives."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(20_000, 32)).astype(np.float32)
    categories = rng.integers(0, 4, len(embeddings))
    faiss.write_index(build_index(embeddings, "flat"), str(tmp_path / "items.faiss"))
    gpu = ItemIndex.load(tmp_path / "items.faiss", embeddings, categories, 4, device="gpu")
    queries = embeddings[:64]
    serial = [gpu.search(q, 200).rows for q in queries]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda q: gpu.search(q, 200).rows, queries))
    for a, b in zip(serial, concurrent, strict=True):
        np.testing.assert_array_equal(a, b)
