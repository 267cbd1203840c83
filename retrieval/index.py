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

import contextlib
import copy
import logging
import threading
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np

from retrieval.segment import LiveSegment, merge_top

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw")
GPU_MAX_K = 2048  # GPU FAISS refuses larger k per search
# Past this many results to over-fetch (k + excluded ids), one filtered scan is cheaper than
# FAISS keeping a heap that large: many deleted items or a long exclusion list.
MAX_OVERFETCH = 4096
# FAISS k-means wants ~39 training points per centroid; fewer lists than asked beat a warning
# and badly trained centroids.
MIN_POINTS_PER_LIST = 39


@dataclass(frozen=True)
class IVFConfig:
    nlist: int = 1024  # inverted lists (k-means centroids); ~4·sqrt(items) is the usual start
    nprobe: int = 32  # lists scanned per query: the recall/latency knob, kept in the file


@dataclass(frozen=True)
class HNSWConfig:
    m: int = 32  # graph neighbours per node (2·m on the base layer)
    ef_construction: int = 128  # candidate list while building: graph quality vs build time
    ef_search: int = 128  # candidate list per query; FAISS uses max(ef_search, k)


_Section = TypeVar("_Section", IVFConfig, HNSWConfig)


@dataclass(frozen=True)
class IndexConfig:
    """Which FAISS index serves retrieval, with its parameters (the manifest records it).

    Flat is exact and the default: up to ~1M items a batched exact scan is fast enough, and
    the approximate kinds are only worth their recall loss beyond that.
    """

    kind: str = "flat"
    ivf: IVFConfig = field(default_factory=IVFConfig)
    hnsw: HNSWConfig = field(default_factory=HNSWConfig)

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind {self.kind!r} is unknown; choose one of {INDEX_KINDS}")
        _check_positive("ivf.nlist", self.ivf.nlist)
        _check_positive("ivf.nprobe", self.ivf.nprobe)
        if self.ivf.nprobe > self.ivf.nlist:
            raise ValueError(
                f"ivf.nprobe ({self.ivf.nprobe}) cannot exceed ivf.nlist ({self.ivf.nlist})"
            )
        _check_positive("hnsw.m", self.hnsw.m, minimum=2)
        _check_positive("hnsw.ef_construction", self.hnsw.ef_construction)
        _check_positive("hnsw.ef_search", self.hnsw.ef_search)

    def to_dict(self) -> dict[str, Any]:
        """Kind plus the parameters of that kind only: the others play no part."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "ivf":
            out["ivf"] = asdict(self.ivf)
        elif self.kind == "hnsw":
            out["hnsw"] = asdict(self.hnsw)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexConfig:
        """Inverse of to_dict; absent sections take defaults, unknown keys are errors."""
        _check_keys("index config", data, {"kind", "ivf", "hnsw"})
        ivf = _section(IVFConfig, "ivf", data.get("ivf"))
        hnsw = _section(HNSWConfig, "hnsw", data.get("hnsw"))
        return cls(kind=data.get("kind", "flat"), ivf=ivf, hnsw=hnsw)


def _check_positive(name: str, value: object, minimum: int = 1) -> None:
    # bool is an int subclass: `nprobe: true` in a config file is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_keys(what: str, data: object, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a mapping, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{what} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _section(cls: type[_Section], name: str, data: object) -> _Section:
    if data is None:
        return cls()
    _check_keys(f"index config section {name!r}", data, {f.name for f in fields(cls)})
    assert isinstance(data, dict)  # _check_keys rejected anything else
    return cls(**data)


def effective_config(config: IndexConfig, num_items: int) -> IndexConfig:
    """The configuration actually built for `num_items`: IVF lists are capped so that
    k-means has enough training points, and nprobe with them."""
    if config.kind != "ivf":
        return config
    nlist = max(1, min(config.ivf.nlist, num_items // MIN_POINTS_PER_LIST))
    if nlist == config.ivf.nlist:
        return config
    logger.warning("ivf.nlist %d capped to %d for %d items", config.ivf.nlist, nlist, num_items)
    ivf = IVFConfig(nlist=nlist, nprobe=min(config.ivf.nprobe, nlist))
    return replace(config, ivf=ivf)


def build_index(embeddings: np.ndarray, config: IndexConfig | str = "flat") -> faiss.Index:
    """Inner-product index whose ids are item rows. A bare kind string (the older call)
    means that kind with default parameters."""
    if isinstance(config, str):
        config = IndexConfig(kind=config)
    config = effective_config(config, len(embeddings))
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = embeddings.shape[1]
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, config.ivf.nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
    else:
        index = faiss.IndexHNSWFlat(dim, config.hnsw.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw.ef_construction
    index.add(embeddings)
    apply_search_params(index, config)
    return index


def index_kind(index: faiss.Index) -> str:
    """The configuration kind of a (CPU) FAISS index."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "ivf"
    if isinstance(index, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(index, faiss.IndexFlat):
        return "flat"
    raise ValueError(f"unsupported FAISS index type {type(index).__name__}")


def index_config(index: faiss.Index) -> IndexConfig:
    """The parameters a (CPU) index actually has: after nlist capping or load-time
    overrides they can differ from what was asked, and the manifest should say what serves."""
    kind = index_kind(index)
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        return IndexConfig(kind, ivf=IVFConfig(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe)))
    if kind == "hnsw":
        hnsw = index.hnsw
        params = HNSWConfig(int(hnsw.nb_neighbors(1)), int(hnsw.efConstruction), int(hnsw.efSearch))
        return IndexConfig(kind, hnsw=params)
    return IndexConfig(kind)


def apply_search_params(index: faiss.Index, config: IndexConfig) -> None:
    """Set the query-time knobs. FAISS's own file format keeps nprobe and efSearch, so this
    matters when a caller overrides them at load time (tuning without a rebuild)."""
    kind = index_kind(index)
    if kind != config.kind:
        raise ValueError(f"index is {kind!r} but the configuration says {config.kind!r}")
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(config.ivf.nprobe, ivf.nlist)
    elif kind == "hnsw":
        index.hnsw.efSearch = config.hnsw.ef_search


@dataclass
class SearchResult:
    rows: np.ndarray  # int64 (<=k,)
    scores: np.ndarray  # float32, descending
    exhausted: bool  # fewer than k eligible items existed


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index: faiss.Index, shard: bool = False) -> faiss.Index:
    """Copy to every visible GPU: replicated (each GPU holds the whole index and serves
    whole queries; more throughput) or sharded (each holds 1/n of the items and every query
    runs on all; more capacity). The caller checks gpu_available() first."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    return faiss.index_cpu_to_all_gpus(index, co=options)


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
        # FAISS GPU indexes are not thread-safe, even for search (they share one
        # StandardGpuResources scratch space): concurrent searches from the executor's
        # workers abort the process. Searches on a GPU index take turns; CPU ones do not.
        self._search_lock: threading.Lock | contextlib.nullcontext = (
            threading.Lock() if on_gpu else contextlib.nullcontext()
        )
        self.size = len(embeddings)  # base rows: what the FAISS index holds
        # One boolean mask per category: filter masks are a few vectorised ORs.
        self._category_masks = [categories == c for c in range(num_categories)]
        # Catalogue changes since the build (None: none). Replaced, never mutated.
        self.live: LiveSegment | None = None

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def with_live(self, live: LiveSegment) -> ItemIndex:
        """The same index serving `live` on top: a shallow copy, so the FAISS index, the
        embeddings and the category masks are shared, not copied."""
        if live.base_size != self.size:
            raise ValueError(f"segment is for {live.base_size} base rows, index has {self.size}")
        other = copy.copy(self)
        other.live = live
        return other

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of base and live (virtual) rows."""
        live = self.live
        if live is None or len(live) == 0 or len(rows) == 0 or rows.max() < self.size:
            return self.embeddings[rows]
        base = rows < self.size
        out = np.empty((len(rows), self.dim), np.float32)
        out[base] = self.embeddings[rows[base]]
        out[~base] = live.embeddings[rows[~base] - self.size]
        return out

    def base_exclusions(self, exclude_rows: np.ndarray) -> np.ndarray:
        """Unique base rows among a request's exclusions (live rows are the segment's)."""
        return np.unique(exclude_rows[exclude_rows < self.size])

    def drop_excluded(
        self, rows: np.ndarray, scores: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A FAISS result without padding (-1), `exclude`d rows and dead base rows."""
        keep = rows >= 0
        if len(exclude):
            keep &= ~np.isin(rows, exclude)
        live = self.live
        if live is not None and len(live.dead_rows):
            keep &= ~live.dead[np.where(keep, rows, 0)]
        return rows[keep], scores[keep]

    def add_live(
        self,
        query: np.ndarray,
        rows: np.ndarray,
        scores: np.ndarray,
        k: int,
        exclude_rows: np.ndarray,
        include_categories: np.ndarray | None = None,
        exclude_categories: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merge the best live items into a best-first list of base results."""
        if self.live is None or len(self.live) == 0:
            return rows, scores
        empty = np.empty(0, np.int64)
        live_rows, live_scores = self.live.top(
            query,
            k,
            exclude_rows,
            include_categories if include_categories is not None else empty,
            exclude_categories if exclude_categories is not None else empty,
        )
        return merge_top(rows, scores, live_rows, live_scores, k)

    @classmethod
    def load(
        cls,
        path: Path,
        embeddings: np.ndarray,
        categories: np.ndarray,
        num_categories: int,
        device: str = "auto",
        config: IndexConfig | None = None,
        gpu_shard: bool = False,
    ) -> ItemIndex:
        """`config`, when given, must match the file's kind; its search-time parameters
        (nprobe, ef_search) replace the ones saved in the file."""
        index = faiss.read_index(str(path))
        if index.ntotal != len(embeddings):
            raise ValueError(f"index has {index.ntotal} items, embeddings {len(embeddings)}")
        if config is not None:
            apply_search_params(index, config)  # before the GPU copy, which inherits them
        use_gpu = device == "gpu" or (device == "auto" and gpu_available())
        if device == "gpu" and not gpu_available():
            raise RuntimeError("device=gpu but no GPU FAISS build or no GPU is visible")
        if use_gpu:
            index = to_gpu(index, shard=gpu_shard)
        return cls(index, embeddings, categories, num_categories, on_gpu=use_gpu)

    def eligible_mask(
        self,
        exclude_rows: np.ndarray,
        include_categories: np.ndarray,
        exclude_categories: np.ndarray,
    ) -> np.ndarray:
        """Base rows a search may return. Categories first seen live have no base items."""
        known = len(self._category_masks)
        if len(include_categories):
            mask = np.zeros(self.size, dtype=bool)
            for c in include_categories:
                if c < known:
                    mask |= self._category_masks[c]
        else:
            mask = np.ones(self.size, dtype=bool)
        for c in exclude_categories:
            if c < known:
                mask &= ~self._category_masks[c]
        mask[exclude_rows[exclude_rows < self.size]] = False
        if self.live is not None and len(self.live.dead_rows):
            mask[self.live.dead_rows] = False
        return mask

    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude_rows: np.ndarray | None = None,
        include_categories: np.ndarray | None = None,
        exclude_categories: np.ndarray | None = None,
    ) -> SearchResult:
        """Exact-k under filters over base and live items. `exclude_rows` may hold live
        (virtual) rows; dead base rows are always excluded."""
        excluded = np.empty(0, np.int64) if exclude_rows is None else np.asarray(exclude_rows)
        inc = include_categories if include_categories is not None else np.empty(0, np.int64)
        exc = exclude_categories if exclude_categories is not None else np.empty(0, np.int64)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        base = self._search_base(q, k, self.base_exclusions(excluded), inc, exc)
        if self.live is None or len(self.live) == 0:
            return base
        rows, scores = self.add_live(q[0], base.rows, base.scores, k, excluded, inc, exc)
        return SearchResult(rows, scores, len(rows) < k)

    def _search_base(
        self, q: np.ndarray, k: int, exclude: np.ndarray, inc: np.ndarray, exc: np.ndarray
    ) -> SearchResult:
        """The base index's exact-k search; `exclude` is unique base rows."""
        if len(inc) == 0 and len(exc) == 0:
            want, fetch = self.unfiltered_fetch(k, exclude)
            if self.fits_one_search(fetch):
                scores, rows = self.faiss_search(q, fetch)
                rows, scores = self.drop_excluded(rows[0], scores[0], exclude)
                rows, scores = rows[:want], scores[:want]
                if len(rows) == want:
                    return SearchResult(rows.astype(np.int64), scores, want < k)
        # Category filters, a deep exclusion list, or an over-fetch that came back short
        # (approximate index): FAISS scores only the eligible rows (bitmap selector).
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

    def faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._search_lock:  # shared by with_live copies: one lock per FAISS index
            return self.index.search(queries, k)

    def unfiltered_fetch(self, k: int, exclude: np.ndarray) -> tuple[int, int]:
        """(results wanted, results to fetch) for a search with only excluded ids (unique
        base rows). An exact index loses at most |excluded| of its top results to them.
        Dead rows (deleted items) can be many, so they are over-fetched by their share of
        the catalogue, with a margin; the rare query whose neighbourhood is denser in dead
        rows comes back short and takes the filtered search instead."""
        live = self.live
        n_dead = 0 if live is None else len(live.dead_rows)
        # Excluded rows that are dead anyway must not count twice.
        n_excluded = int((~live.dead[exclude]).sum()) if live is not None else len(exclude)
        want = min(k, self.size - n_dead - n_excluded)
        margin = 0
        if n_dead:
            dead_share = n_dead / self.size
            margin = int(np.ceil(1.5 * want * dead_share / max(1e-9, 1 - dead_share))) + 32
        return want, min(self.size, want + n_excluded + margin)

    def fits_one_search(self, fetch: int) -> bool:
        """GPU FAISS refuses k > GPU_MAX_K per search, and a very deep over-fetch costs more
        than a filtered scan; beyond either the exact scan serves."""
        return fetch <= MAX_OVERFETCH and not (self.on_gpu and fetch > GPU_MAX_K)

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
        if self.live is not None and self.live.changed:  # not a batch path's concern
            out = np.full((len(queries), k), -1, dtype=np.int64)
            for i, (query, exclude) in enumerate(zip(queries, exclude_rows, strict=True)):
                rows = self.search(query, k, exclude).rows
                out[i, : len(rows)] = rows
            return out
        extra = max((len(e) for e in exclude_rows), default=0)
        fetch = min(self.size, k + extra)
        _, rows = self.faiss_search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (row, exclude) in enumerate(zip(rows, exclude_rows, strict=True)):
            kept = row[(row >= 0) & ~np.isin(row, exclude)][:k]
            out[i, : len(kept)] = kept
        return out
