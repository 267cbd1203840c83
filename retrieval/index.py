"""FAISS index over item embeddings with filters applied inside the search.

Guarantee: `search` returns exactly k distinct eligible rows when the catalogue has k
eligible items (all of them otherwise, with `exhausted=True`), never -1 and never an
excluded item. Strategy, cheapest first:
  * exclude-ids only: over-fetch k + |excluded| (exact indexes can lose at most |excluded|);
  * category filters: a bitmap ID selector so FAISS scores only eligible items (CPU);
  * anything still short (approximate index, GPU without selectors): exact scan of the
    eligible rows with numpy, so the guarantee never depends on the index type.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw")


@dataclass
class SearchResult:
    rows: np.ndarray  # int64 (<=k,)
    scores: np.ndarray  # float32, descending
    exhausted: bool  # fewer than k eligible items existed


def build_index(
    embeddings: np.ndarray, kind: str = "flat", nlist: int = 256, hnsw_m: int = 32
) -> faiss.Index:
    """Inner-product index whose ids are item rows."""
    dim = embeddings.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = max(1, min(nlist, len(embeddings) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
        index.nprobe = min(16, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    index.add(embeddings)
    return index


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index) -> faiss.Index:
    """Copy to every visible GPU (replicated); the caller checks gpu_available() first."""
    return faiss.index_cpu_to_all_gpus(index)


class ItemIndex:
    def __init__(
        self,
        index: faiss.Index,
        embeddings: np.ndarray,
        categories: np.ndarray,
        num_categories: int,
        on_gpu: bool = False,
    ) -> None:
        self.index = index
        self.embeddings = embeddings
        self.categories = categories
        self.on_gpu = on_gpu
        self.size = len(embeddings)
        # One boolean mask per category: filter masks are a few vectorised ORs.
        self._category_masks = [categories == c for c in range(num_categories)]

    @classmethod
    def load(
        cls,
        path: Path,
        embeddings: np.ndarray,
        categories: np.ndarray,
        num_categories: int,
        device: str = "auto",
    ) -> ItemIndex:
        index = faiss.read_index(str(path))
        if index.ntotal != len(embeddings):
            raise ValueError(f"index has {index.ntotal} items, embeddings {len(embeddings)}")
        use_gpu = device == "gpu" or (device == "auto" and gpu_available())
        if device == "gpu" and not gpu_available():
            raise RuntimeError("device=gpu but no GPU FAISS build or no GPU is visible")
        if use_gpu:
            index = to_gpu(index)
        return cls(index, embeddings, categories, num_categories, on_gpu=use_gpu)

    def eligible_mask(
        self,
        exclude_rows: np.ndarray,
        include_categories: np.ndarray,
        exclude_categories: np.ndarray,
    ) -> np.ndarray:
        if len(include_categories):
            mask = np.zeros(self.size, dtype=bool)
            for c in include_categories:
                mask |= self._category_masks[c]
        else:
            mask = np.ones(self.size, dtype=bool)
        for c in exclude_categories:
            mask &= ~self._category_masks[c]
        mask[exclude_rows] = False
        return mask

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude_rows: np.ndarray | None = None,
        include_categories: np.ndarray | None = None,
        exclude_categories: np.ndarray | None = None,
    ) -> SearchResult:
        exclude = np.unique(exclude_rows) if exclude_rows is not None else np.empty(0, np.int64)
        inc = include_categories if include_categories is not None else np.empty(0, np.int64)
        exc = exclude_categories if exclude_categories is not None else np.empty(0, np.int64)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if len(inc) == 0 and len(exc) == 0:
            eligible_count = self.size - len(exclude)
            want = min(k, eligible_count)
            fetch = min(self.size, want + len(exclude))
            scores, rows = self.index.search(q, fetch)
            rows, scores = rows[0], scores[0]
            keep = rows >= 0
            if len(exclude):
                keep &= ~np.isin(rows, exclude)
            rows, scores = rows[keep][:want], scores[keep][:want]
            if len(rows) == want:
                return SearchResult(rows.astype(np.int64), scores, want < k)
            mask = self.eligible_mask(exclude, inc, exc)
        else:
            mask = self.eligible_mask(exclude, inc, exc)
            want = min(k, int(mask.sum()))
            if want == 0:
                return SearchResult(np.empty(0, np.int64), np.empty(0, np.float32), True)
            if not self.on_gpu:
                bitmap = np.packbits(mask, bitorder="little")
                selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
                scores, rows = self.index.search(q, want, params=self._params(selector))
                rows, scores = rows[0], scores[0]
                keep = rows >= 0
                rows, scores = rows[keep], scores[keep]
                if len(rows) == want:
                    return SearchResult(rows.astype(np.int64), scores, want < k)
        return self._exact_scan(q[0], mask, min(k, int(mask.sum())), k)

    def _params(self, selector: faiss.IDSelector) -> faiss.SearchParameters:
        """Each index family takes its own parameter type (it rejects the base one)."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=ivf.nprobe)
        if isinstance(self.index, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.index.hnsw.efSearch)
        return faiss.SearchParameters(sel=selector)

    def _exact_scan(self, query: np.ndarray, mask: np.ndarray, want: int, k: int) -> SearchResult:
        """Exact top-`want` over eligible rows: the fallback that keeps the guarantee."""
        eligible = np.flatnonzero(mask)
        scores = self.embeddings[eligible] @ query
        if want < len(eligible):
            top = np.argpartition(-scores, want - 1)[:want]
        else:
            top = np.arange(len(eligible))
        top = top[np.argsort(-scores[top], kind="stable")]
        return SearchResult(
            eligible[top].astype(np.int64), scores[top].astype(np.float32), want < k
        )

    def search_many(
        self, queries: np.ndarray, k: int, exclude_rows: list[np.ndarray]
    ) -> np.ndarray:
        """Batched top-k rows (evaluation path): one FAISS call, then per-row exclusion."""
        extra = max((len(e) for e in exclude_rows), default=0)
        fetch = min(self.size, k + extra)
        _, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (row, exclude) in enumerate(zip(rows, exclude_rows, strict=True)):
            kept = row[(row >= 0) & ~np.isin(row, exclude)][:k]
            out[i, : len(kept)] = kept
        return out
