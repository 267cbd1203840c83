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


def test_gpu_exact_index_matches_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5000, 32)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    categories = rng.integers(0, 4, len(embeddings))
    faiss.write_index(build_index(embeddings, "flat"), str(tmp_path / "items.faiss"))
    cpu = ItemIndex.load(tmp_path / "items.faiss", embeddings, categories, 4, device="cpu")
    gpu = ItemIndex.load(tmp_path / "items.faiss", embeddings, categories, 4, device="gpu")
    assert gpu.on_gpu and not cpu.on_gpu
    excluded = rng.choice(len(embeddings), 300, replace=False)
    for query in embeddings[:20]:
        a = cpu.search(query, 100, excluded)
        b = gpu.search(query, 100, excluded)
        np.testing.assert_array_equal(np.sort(a.rows), np.sort(b.rows))
        # category filters on the GPU go through the exact-scan fallback: still exact k
        c = gpu.search(query, 100, excluded, include_categories=np.array([1, 2]))
        assert len(c.rows) == 100 and np.isin(categories[c.rows], [1, 2]).all()
