"""Non-neural recommendation baselines evaluated under the same protocol as the models.

Every baseline is fitted on training sequences and then, for each evaluation user, ranks the
whole catalogue from that user's history alone: seen items are excluded (as in serving), lists
hold no duplicates and are padded with -1 only when the catalogue runs out.

Ranking is by a per-item key. All baselines break ties (and fill lists) by training popularity,
then by lower row, so output is deterministic and comparable across baselines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recdata.split import UserSequences, popularity_counts

CHUNK_USERS = 512  # users scored at once: bounds the dense (users, items) key matrix


class Baseline(Protocol):
    def fit(self, train: UserSequences, num_items: int) -> None: ...

    def recommend(self, histories: list[np.ndarray], k: int) -> np.ndarray:
        """(len(histories), k) int64 item rows, best first, -1 padded, no seen items."""
        ...


def _popularity_prior(counts: np.ndarray) -> np.ndarray:
    """Unique key in (0, 1) per item: higher for more popular, ties by lower row."""
    n = len(counts)
    order = np.lexsort((np.arange(n), -counts))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return 1.0 - (rank + 1) / (n + 1)


def _top_k(keys: np.ndarray, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Columns of each row's k largest keys, ordered by (key, tiebreak) descending.

    Columns whose key is -inf (excluded) come back as -1.
    """
    rows, n = keys.shape
    out = np.full((rows, k), -1, np.int64)
    width = min(k, n)
    if rows == 0 or width == 0:
        return out
    part = np.argpartition(-keys, width - 1, axis=1)[:, :width]
    part_keys = np.take_along_axis(keys, part, axis=1)
    # argpartition picks arbitrarily among keys equal to the k-th one; rows where such a tie
    # straddles the cut (rare: equal float scores) are re-ranked exactly with a full sort.
    kth = part_keys.min(axis=1, keepdims=True)
    straddling = (keys == kth).sum(axis=1) > (part_keys == kth).sum(axis=1)
    for r in np.flatnonzero(straddling & np.isfinite(kth[:, 0])):
        part[r] = np.lexsort((-tiebreak, -keys[r]))[:width]
        part_keys[r] = keys[r, part[r]]
    order = np.lexsort((-tiebreak[part], -part_keys), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_keys = np.take_along_axis(part_keys, order, axis=1)
    out[:, :width] = np.where(np.isfinite(top_keys), top, -1)
    return out


def _history_matrix(
    histories: list[np.ndarray], num_items: int, weights: list[np.ndarray] | None = None
) -> sp.csr_matrix:
    """Sparse (users, items) sum of per-event weights (1 per event by default)."""
    lengths = np.fromiter((len(h) for h in histories), np.int64, len(histories))
    cols = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    data = (
        np.concatenate(weights).astype(np.float64)
        if weights is not None and len(weights)
        else np.ones(len(cols))
    )
    rows = np.repeat(np.arange(len(histories)), lengths)
    matrix = sp.coo_matrix((data, (rows, cols)), shape=(len(histories), num_items))
    return matrix.tocsr()  # coo -> csr sums repeated (user, item) events


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """implicit parallelises over users itself; a multi-threaded BLAS underneath it
    oversubscribes the cores (implicit warns about this and runs many times slower)."""
    from threadpoolctl import threadpool_limits  # ships with implicit and scikit-learn

    with threadpool_limits(1, "blas"):
        yield


class _KeyedBaseline(ABC):
    """Shared fit/recommend: subclasses only produce a (users, items) key matrix."""

    num_items: int = 0
    _prior: np.ndarray

    def fit(self, train: UserSequences, num_items: int) -> None:
        self.num_items = num_items
        self._prior = _popularity_prior(popularity_counts(train, num_items))
        self._fit(train)

    def recommend(self, histories: list[np.ndarray], k: int) -> np.ndarray:
        if not hasattr(self, "_prior"):
            raise RuntimeError("fit() must be called before recommend()")
        out = np.full((len(histories), k), -1, np.int64)
        for start in range(0, len(histories), CHUNK_USERS):
            batch = [np.asarray(h, np.int64) for h in histories[start : start + CHUNK_USERS]]
            keys = self._keys(batch)
            lengths = [len(h) for h in batch]
            if sum(lengths):
                keys[np.repeat(np.arange(len(batch)), lengths), np.concatenate(batch)] = -np.inf
            out[start : start + len(batch)] = _top_k(keys, k, self._prior)
        return out

    def _fit(self, train: UserSequences) -> None:  # noqa: B027 - optional hook
        """Model-specific training; the popularity prior is already set."""

    @abstractmethod
    def _keys(self, histories: list[np.ndarray]) -> np.ndarray:
        """Writable float64 (len(histories), num_items); larger is better."""


class PopularityBaseline(_KeyedBaseline):
    """Most-interacted training items first (the same order for every user)."""

    def _keys(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.tile(self._prior, (len(histories), 1))


class ItemCooccurrenceBaseline(_KeyedBaseline):
    """Item-to-item co-occurrence within a sliding window of each training sequence.

    Raw C[i, j] sums 1/d over pairs of distinct items d <= ``window`` positions apart, both
    directions. The similarity used is C[i, j] / (n_i^0.5 * n_j^``popularity_penalty``), n
    being training counts: the source side evens out each history item's influence, and the
    candidate side trades accuracy for less popularity bias (0.5 is cosine, which on the
    synthetic data over-promotes rare items). A user's score for j is
    sum_a ``recency_decay``^a * sim[h_a, j] over the ``recent`` last history items (a = 0 for
    the newest). Items without any co-occurrence score are filled in popularity order.
    """

    def __init__(
        self,
        window: int = 10,
        recent: int = 10,
        recency_decay: float = 0.9,
        popularity_penalty: float = 0.25,
    ) -> None:
        if window < 1 or recent < 1:
            raise ValueError("window and recent must be >= 1")
        self.window = window
        self.recent = recent
        self.recency_decay = recency_decay
        self.popularity_penalty = popularity_penalty
        self.similarity: sp.csr_matrix | None = None

    def _fit(self, train: UserSequences) -> None:
        n = self.num_items
        seqs = [np.asarray(s, np.int64) for s in train.sequences]
        flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        rows, cols, vals = [], [], []
        for d in range(1, self.window + 1):
            a, b = flat[:-d], flat[d:]
            keep = (owner[:-d] == owner[d:]) & (a != b)
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            vals += [np.full(2 * int(keep.sum()), 1.0 / d)]
        counts = sp.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        ).tocsr()
        occurrences = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
        source = sp.diags(occurrences**-0.5)
        candidate = sp.diags(occurrences**-self.popularity_penalty)
        self.similarity = (source @ counts @ candidate).tocsr()

    def _keys(self, histories: list[np.ndarray]) -> np.ndarray:
        assert self.similarity is not None
        recent = [h[-self.recent :] for h in histories]
        weights = [self.recency_decay ** np.arange(len(h))[::-1] for h in recent]
        profile = _history_matrix(recent, self.num_items, weights)
        scores = (profile @ self.similarity).toarray()
        # Shifting scored items above 1 ranks them ahead of every popularity-only item
        # (prior < 1) without changing their relative order.
        return np.where(scores > 0, 1.0 + scores, self._prior[None, :])


class ALSBaseline(_KeyedBaseline):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) via ``implicit``.

    Confidence c_ui = 1 + alpha * (#training events of u on i); unobserved pairs have c = 1,
    p = 0. Fitted with implicit's CPU conjugate-gradient ALS, seeded. At evaluation time user
    factors are recomputed from each user's full history with the item factors held fixed
    (``AlternatingLeastSquares.recalculate_user``: an exact Cholesky least-squares solve per
    user), so the newest history item counts and no user-id mapping is needed.

    The strong regularisation and low alpha are what held-out recall favoured on synthetic
    data (5,000 items x 2,000 users); weaker settings overfit the short sequences. Fitting is
    deterministic for a seed: implicit solves each user (item) independently across threads.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 20.0,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.seed = seed
        self.num_threads = num_threads
        self.model: Any = None

    def _confidence(self, histories: list[np.ndarray]) -> sp.csr_matrix:
        matrix = _history_matrix(histories, self.num_items)
        matrix.data = 1.0 + self.alpha * matrix.data
        return matrix.astype(np.float32)

    def _fit(self, train: UserSequences) -> None:
        # Imported here so the other baselines work where the optional package is missing.
        from implicit.cpu.als import AlternatingLeastSquares

        with _single_threaded_blas():
            # alpha=1.0: the confidences passed in already are 1 + alpha * count.
            self.model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0,
                iterations=self.iterations,
                random_state=self.seed,
                num_threads=self.num_threads,
            )
            self.model.fit(self._confidence(train.sequences), show_progress=False)

    def _keys(self, histories: list[np.ndarray]) -> np.ndarray:
        with _single_threaded_blas():
            users = self.model.recalculate_user(
                np.arange(len(histories)), self._confidence(histories)
            )
        return (users @ self.model.item_factors.T).astype(np.float64)


BASELINES: dict[str, Callable[[], Baseline]] = {
    "popularity": PopularityBaseline,
    "cooccurrence": ItemCooccurrenceBaseline,
    "als": ALSBaseline,
}
