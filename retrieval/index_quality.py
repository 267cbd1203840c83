"""How much an approximate index loses against exact search, measured at build time.

recall@K = mean over held-out queries of |approximate top-K ∩ exact top-K| / K, where the
exact top-K comes from a flat inner-product scan of the very same embeddings. The result
(with build and per-query search times) goes into the manifest, and serving refuses an
index whose recall is below a configured floor unless forced.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from retrieval.index import IndexConfig, build_index, index_config

# Queries per FAISS call: bounds the (batch, k) result arrays without losing BLAS batching.
BATCH = 1024
TIMING_RUNS = 3


class IndexBelowRecallFloor(RuntimeError):
    """The index's measured recall is below the floor the server was configured with."""

    def __init__(self, message: str, recall: float, floor: float) -> None:
        super().__init__(message)
        self.recall = recall
        self.floor = floor


@dataclass(frozen=True)
class IndexQuality:
    kind: str
    k: int
    recall: float  # recall@k of the served index against exact search
    queries: int
    build_seconds: float | None  # None when the caller built the index untimed
    search_ms_per_query: float  # served index, batched, median over runs
    exact_search_ms_per_query: float  # flat scan over the same items, same batching
    config: dict[str, Any]  # IndexConfig.to_dict() of the index as measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexQuality:
        return cls(**data)


def _check_inputs(index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int) -> None:
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("recall is measured against inner-product search; index metric differs")
    if index.ntotal != len(embeddings) or index.d != embeddings.shape[1]:
        raise ValueError(
            f"index holds {index.ntotal}×{index.d}, embeddings are "
            f"{embeddings.shape[0]}×{embeddings.shape[1]}: not the same items"
        )
    if queries.ndim != 2 or queries.shape[1] != index.d:
        raise ValueError(f"queries must be (n, {index.d}), got {queries.shape}")
    if len(queries) == 0:
        raise ValueError("recall needs at least one query")
    if not 1 <= k <= index.ntotal:
        raise ValueError(f"k must be in [1, {index.ntotal}], got {k}")


def _search(index: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-k ids for all queries, in fixed-size batches (the same for every index, so the
    exact reference and a flat index under test take identical code paths)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), BATCH):
        _, ids = index.search(queries[start : start + BATCH], k)
        out[start : start + BATCH] = ids
    return out


def _timed_search(
    index: faiss.Index, queries: np.ndarray, k: int, runs: int
) -> tuple[np.ndarray, float]:
    """Ids from the first run and the median ms per query over `runs` runs."""
    ids = np.empty(0)
    elapsed = []
    for _ in range(runs):
        started = time.perf_counter()
        ids = _search(index, queries, k)
        elapsed.append(time.perf_counter() - started)
    return ids, 1000.0 * statistics.median(elapsed) / len(queries)


def _exact_index(embeddings: np.ndarray) -> faiss.Index:
    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(embeddings)
    return exact


def _recall(approx: np.ndarray, exact: np.ndarray, num_items: int) -> float:
    """Mean per-query overlap / k, vectorised: (query, id) pairs become one int64 key each."""
    offsets = np.arange(len(exact), dtype=np.int64)[:, None] * num_items
    found = approx >= 0  # -1 (a short approximate result) is a miss, never a match
    hits = np.isin((approx + offsets)[found], exact + offsets)
    return float(hits.sum()) / exact.size


def _as_float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def measure_recall(
    index: faiss.Index, embeddings: np.ndarray, queries: np.ndarray, k: int
) -> float:
    """Mean over queries of |index top-k ∩ exact top-k| / k (1.0 for an exact index)."""
    embeddings, queries = _as_float32(embeddings), _as_float32(queries)
    _check_inputs(index, embeddings, queries, k)
    exact = _search(_exact_index(embeddings), queries, k)
    return _recall(_search(index, queries, k), exact, index.ntotal)


def assess(
    index: faiss.Index,
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    config: IndexConfig,
    build_seconds: float | None = None,
    runs: int = TIMING_RUNS,
) -> IndexQuality:
    """Recall@k and batched search latency of `index` and of exact search on `queries`
    (held-out users' vectors: the distribution the index will actually serve)."""
    embeddings, queries = _as_float32(embeddings), _as_float32(queries)
    _check_inputs(index, embeddings, queries, k)
    measured = index_config(index)  # what is built (nlist may be capped), not what was asked
    if measured.kind != config.kind:
        raise ValueError(f"index is {measured.kind!r} but the configuration says {config.kind!r}")
    exact_ids, exact_ms = _timed_search(_exact_index(embeddings), queries, k, runs)
    approx_ids, approx_ms = _timed_search(index, queries, k, runs)
    return IndexQuality(
        kind=config.kind,
        k=k,
        recall=_recall(approx_ids, exact_ids, index.ntotal),
        queries=len(queries),
        build_seconds=build_seconds,
        search_ms_per_query=approx_ms,
        exact_search_ms_per_query=exact_ms,
        config=measured.to_dict(),
    )


def build_and_assess(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    config: IndexConfig,
) -> tuple[faiss.Index, IndexQuality]:
    """Build the configured index, timing the build, then assess it."""
    started = time.perf_counter()
    index = build_index(embeddings, config)
    build_seconds = time.perf_counter() - started
    return index, assess(index, embeddings, queries, k, config, build_seconds)


def _as_dict(quality: dict[str, Any] | IndexQuality) -> dict[str, Any]:
    q = quality.to_dict() if isinstance(quality, IndexQuality) else quality
    if not isinstance(q.get("recall"), int | float):
        raise ValueError("index quality has no measured 'recall' (built before it was recorded?)")
    return q


def recall_floor_message(quality: dict[str, Any] | IndexQuality, floor: float) -> str:
    """What the refusal (or, when forced, the caller's warning) says."""
    q = _as_dict(quality)
    params = q.get("config", {}).get(q.get("kind"), {})
    detail = ", ".join(f"{name}={value}" for name, value in params.items())
    return (
        f"index {q.get('kind', '?')!r}{f' ({detail})' if detail else ''} has recall@{q.get('k')}"
        f" {q['recall']:.4f} on {q.get('queries', '?')} held-out queries, below the floor"
        f" {floor:.4f}; rebuild with a more accurate configuration (larger nprobe or ef_search,"
        " or kind 'flat'), or force serving it (force=True)"
    )


def check_recall_floor(
    quality: dict[str, Any] | IndexQuality, floor: float, force: bool = False
) -> None:
    """Raise IndexBelowRecallFloor when recall < floor, unless `force` (the caller then
    logs recall_floor_message as a warning)."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"recall floor must be in [0, 1], got {floor}")
    recall = float(_as_dict(quality)["recall"])
    if recall >= floor or force:
        return
    raise IndexBelowRecallFloor(recall_floor_message(quality, floor), recall, floor)
