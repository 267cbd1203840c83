"""Several retrieval requests served by one user-tower forward and one FAISS search.

`retrieve_batch` returns, for each request, what `Retriever.retrieve` returns for it alone:
same ids in the same order, same flags, scores equal up to float rounding (see "Exactness").
Only the common case is batched: a user with known history and no category filter. Every
other request (category filters, cold start, a result that came back short, anything
unusual) goes through `Retriever.retrieve` itself, which owns the exact-k guarantee under
filters, so the two paths cannot drift apart on the hard cases.

Exactness. The batched user-tower forward runs a (B, ·) matrix multiply instead of (1, ·);
torch's kernels then round differently in the last bit (measured: up to ~2e-7 per vector
component). With FAISS on its default per-query scan the search itself is bit-identical per
query whatever the batch size; with the BLAS path (`enable_faiss_blas_for_batches`) the
inner products come from sgemm and differ by a few ulp too. Ids and order are therefore
identical unless two items' scores are within ~1e-6 of each other (a near-tie whose order
is float noise either way). Measured on a 5,000-item artifact, k=200: 10 of 2,000 requests
had one adjacent pair swapped, score gap <= 3e-8. `tests/unit/test_batching.py` checks
bit-identity with `bitwise=True`, and that any difference without it is only that.

Why CPU batching pays only after a FAISS setting: see `enable_faiss_blas_for_batches`.
"""

from __future__ import annotations

import ctypes
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch

from retrieval.covisitation import fuse
from retrieval.history import pad_histories
from retrieval.retriever import Candidates, Retriever

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalQuery:
    """The arguments of one `Retriever.retrieve` call."""

    recent_item_ids: np.ndarray
    k: int
    exclude_item_ids: np.ndarray | None = None
    include_categories: list[str] | None = None
    exclude_categories: list[str] | None = None


@dataclass(eq=False)  # holds arrays: compare by identity
class _Prepared:
    """A request that takes the batched path, resolved to item rows."""

    slot: int  # position in the caller's list
    history: np.ndarray  # known history rows, oldest first
    exclude_rows: np.ndarray  # as Retriever.retrieve passes them on (not deduplicated)
    excluded: np.ndarray  # unique excluded rows (what the index search filters)
    unknown: int  # recent ids not in the catalogue
    k: int
    want: int  # min(k, eligible items)
    fetch: int  # how many FAISS must return so that `want` survive the exclusions


def retrieve_batch(
    retriever: Retriever, requests: list[RetrievalQuery], *, bitwise: bool = False
) -> list[Candidates | Exception]:
    """One result per request, in order; a request that fails gets its exception in its slot
    (the others are unaffected).

    `bitwise=True` runs the user tower once per request, as the single path does, so that
    results are bit-identical to `Retriever.retrieve` while FAISS stays on its scan path.
    It costs ~70 us per request on this CPU (32 requests: 2.3 ms instead of 0.2 ms for one
    forward): for tests and audits, not for serving."""
    if len(requests) == 1 and not bitwise:
        # A lone request takes the single path: it is the reference, and a batch of one
        # only adds the padding and grouping work (measured +0.2 ms at 10k items).
        return [_single(retriever, requests[0])]
    results: list[Candidates | Exception | None] = [None] * len(requests)
    batched: list[_Prepared] = []
    for slot, query in enumerate(requests):
        try:
            prepared = _prepare(retriever, query, slot)
        except Exception as exc:  # e.g. malformed ids: only this request fails
            results[slot] = exc
            continue
        if prepared is None:
            results[slot] = _single(retriever, query)
        else:
            batched.append(prepared)
    if batched:
        try:
            done = _search_batched(retriever, batched, bitwise)
        except Exception:
            # Something in the shared forward or search failed: isolate it by serving each
            # member alone, so a single bad request fails only itself.
            logger.exception(
                "batched retrieval failed; serving %d requests one by one", len(batched)
            )
            done = {}
        for p in batched:
            results[p.slot] = (
                done[p.slot] if p.slot in done else _single(retriever, requests[p.slot])
            )
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]  # every slot is filled above


def retrieve_grouped(
    items: list[tuple[Retriever, RetrievalQuery]], *, bitwise: bool = False
) -> list[Candidates | Exception]:
    """`retrieve_batch` for requests that each carry the retriever they started on: during
    a hot reload one micro-batch can hold requests for the old and the new version, and
    each must finish on its own. Results in input order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for position, (retriever, _) in enumerate(items):
        groups[id(retriever)].append(position)
    results: list[Candidates | Exception | None] = [None] * len(items)
    for positions in groups.values():
        retriever = items[positions[0]][0]
        answers = retrieve_batch(retriever, [items[i][1] for i in positions], bitwise=bitwise)
        for i, answer in zip(positions, answers, strict=True):
            results[i] = answer
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]  # every slot is filled above


def _single(retriever: Retriever, query: RetrievalQuery) -> Candidates | Exception:
    try:
        return retriever.retrieve(
            query.recent_item_ids,
            query.k,
            query.exclude_item_ids,
            query.include_categories,
            query.exclude_categories,
        )
    except Exception as exc:
        return exc


def _prepare(retriever: Retriever, query: RetrievalQuery, slot: int) -> _Prepared | None:
    """Rows and sizes for the batched path, or None when the single path must serve it."""
    if query.include_categories or query.exclude_categories or query.k < 1:
        return None  # filters: the bitmap-selector search and its exact-k fallback
    items = retriever.items
    rows, known = items.rows_of(query.recent_item_ids)
    history = rows[known]
    if len(history) == 0:
        return None  # cold start: popular items
    exclude_rows = retriever.exclusion_rows(query.exclude_item_ids)
    excluded = retriever.index.base_exclusions(exclude_rows)
    want, fetch = retriever.index.unfiltered_fetch(query.k, excluded)
    if fetch < 1 or not retriever.index.fits_one_search(fetch):
        return None  # the single path handles it (exact scan)
    unknown = retriever.unknown_count(known, query.recent_item_ids)
    return _Prepared(slot, history, exclude_rows, excluded, unknown, query.k, want, fetch)


@torch.inference_mode()
def _user_vectors(retriever: Retriever, histories: list[np.ndarray], bitwise: bool) -> np.ndarray:
    """One forward for every user (Retriever.user_vector does the same for one), or one
    forward each when the single path's exact arithmetic is wanted."""
    if bitwise:
        return np.stack([retriever.user_vector(h) for h in histories])
    rows, cats = pad_histories(histories, retriever.items, retriever.model.cfg.max_history)
    return retriever.model.user(rows, cats).numpy()


def _search_batched(
    retriever: Retriever, batch: list[_Prepared], bitwise: bool
) -> dict[int, Candidates]:
    """Candidates by slot for every member whose search came back complete; the caller
    serves the rest (an approximate index that returned too few) through the single path."""
    users = _user_vectors(retriever, [p.history for p in batch], bitwise)
    out: dict[int, Candidates] = {}
    for members, rows, scores in _faiss_search(retriever, batch, users):
        for i, member in enumerate(members):
            p = batch[member]
            found = _keep_eligible(retriever, p, rows[i], scores[i])
            if found is not None:
                out[p.slot] = _finish(retriever, p, users[member], *found)
    return out


def _faiss_search(
    retriever: Retriever, batch: list[_Prepared], users: np.ndarray
) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """FAISS searches, each as (positions in `batch`, rows, scores), one row per position.

    An exact flat index returns, for k = F, a list whose first f entries are its answer for
    k = f, so one search at the largest fetch serves everyone. Approximate indexes do not
    promise that (HNSW explores max(efSearch, k) candidates), so there the members are
    grouped by fetch and each group is searched with exactly the single path's k."""
    groups: dict[int, list[int]] = defaultdict(list)
    if _prefix_stable(retriever.index.index):
        groups[max(p.fetch for p in batch)] = list(range(len(batch)))
    else:
        for position, p in enumerate(batch):
            groups[p.fetch].append(position)
    searches = []
    for fetch, members in groups.items():
        queries = np.ascontiguousarray(users[members], dtype=np.float32)
        scores, rows = retriever.index.faiss_search(queries, fetch)
        searches.append((members, rows, scores))
    return searches


def _prefix_stable(index: faiss.Index) -> bool:
    gpu_flat = getattr(faiss, "GpuIndexFlat", None)
    return isinstance(index, faiss.IndexFlat) or (
        gpu_flat is not None and isinstance(index, gpu_flat)
    )


def _keep_eligible(
    retriever: Retriever, p: _Prepared, rows: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """This member's top `fetch` minus exclusions, cut to `want`; None if short (the single
    path then falls back to its exact scan, which the caller reaches by retrieving alone)."""
    rows, scores = rows[: p.fetch], scores[: p.fetch]
    rows, scores = retriever.index.drop_excluded(rows, scores, p.excluded)
    rows, scores = rows[: p.want], scores[: p.want]
    if len(rows) < p.want:
        return None
    return rows.astype(np.int64), scores


def _finish(
    retriever: Retriever, p: _Prepared, user: np.ndarray, rows: np.ndarray, scores: np.ndarray
) -> Candidates:
    """Live items merged in and co-visitation fused exactly as Retriever.retrieve does it.
    Its category mask (`_category_ok`) is all-true without category filters, so it is
    skipped here."""
    rows, scores = retriever.index.add_live(user, rows, scores, p.k, p.exclude_rows)
    exhausted = len(rows) < p.k
    inner = scores
    if retriever.covisitation is not None:
        covisited, _ = retriever.covisitation.candidates(
            p.history,
            retriever.covisitation_k(p.k),
            eligible=retriever.covisitation_eligible(),
            exclude=p.exclude_rows,
        )
        rows, scores = fuse(rows, covisited, p.k)
        inner = (retriever.index.vectors(rows) @ user).astype(np.float32)
    return Candidates(retriever.ids_of(rows), scores, inner, False, p.unknown, exhausted)


# --- FAISS's BLAS path for batches ----------------------------------------------------------


# OpenBLAS kernel sets with AVX2 or better; anything else (e.g. the "Barcelona" or
# "Prescott" SSE kernels OpenBLAS 0.3.15 picks for CPUs it does not know) makes sgemm slow.
_FAST_KERNELS = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"}


def enable_faiss_blas_for_batches(min_queries: int = 4, dim: int = 64) -> int:
    """Let FAISS score a search of at least `min_queries` queries with sgemm; smaller ones,
    single queries above all, stay on the per-query scan. Returns the threshold set.
    Process-wide (a FAISS global, it also affects IVF coarse quantisation): call once at
    start-up, before serving.

    Why. An exact scan of a large catalogue is memory-bound: one query over 1M x 64-d items
    reads 256 MB. The BLAS path reads the items once per block of queries. Measured here
    (bench/retrieval_batching.py; AMD EPYC Zen 5, 2 cores, 1 FAISS thread, k=250,
    OPENBLAS_CORETYPE=SkylakeX), ms per query, scan vs. BLAS:
        1M items:   single 8.4 | batch 4: 8.3 vs 4.3 | 8: 8.5 vs 2.6 | 32: 8.4 vs 1.27 |
                    128: 8.6 vs 0.87 (9.7x the single-query throughput)
        100k items: single 0.63 | batch 8: 0.62 vs 0.27 | 32: 0.61 vs 0.16 | 128: 0.59 vs 0.14
    FAISS 1.15 takes the BLAS path only when `queries x dim >= distance_compute_blas_threshold`
    (default 128,000: 2,000 queries of 64-d), so no serving batch reaches it by default, and
    batching on the scan path gains nothing (1.0x above).

    Why `min_queries * dim` and not the design note's 20. FAISS 1.15 compares `queries x dim`
    with the threshold (older releases compared `queries`), so 20 also sends one 64-d query
    to sgemm: 15.4 ms instead of 8.4 ms on 1M items, 1.4 ms instead of 0.63 ms on 100k.
    min_queries=4 because a batch of 2 gains nothing on the BLAS path (8.3 ms per query on
    1M items, slower than the scan on 100k) while 4 already halves the cost.

    The gain needs a fast BLAS kernel: the OpenBLAS 0.3.15 inside the faiss-cpu wheel does
    not know Zen 5 and falls back to old SSE kernels ("Barcelona"), where batch 128 on 1M
    items costs 2.7 ms per query instead of 0.87. Set OPENBLAS_CORETYPE (SkylakeX on AVX-512
    machines, Haswell on AVX2 ones) in the environment before the process starts: OpenBLAS
    reads it when the library loads, so setting it from Python after `import faiss` is too
    late. A warning is logged when the loaded kernels are slow ones.
    """
    if min_queries < 2:
        raise ValueError("min_queries must be >= 2: one query is faster on the scan path")
    threshold = min_queries * dim
    faiss.cvar.distance_compute_blas_threshold = threshold
    core = openblas_core()
    if core is not None and core.lower() not in _FAST_KERNELS:
        logger.warning(
            "OpenBLAS uses its %s kernels here; set OPENBLAS_CORETYPE (e.g. SkylakeX or "
            "Haswell) before start-up, or batched FAISS searches gain much less",
            core,
        )
    return threshold


def openblas_core() -> str | None:
    """The kernel set of the OpenBLAS bundled with faiss-cpu (None when there is none, e.g.
    a conda or GPU build linked to another BLAS)."""
    libs = Path(faiss.__file__).resolve().parent.parent / "faiss_cpu.libs"
    for path in sorted(libs.glob("libopenblas*.so*")):
        try:
            lib = ctypes.CDLL(str(path))  # already loaded by faiss: this only finds it
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            return None
    return None
