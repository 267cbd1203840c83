"""Items added or removed since the artifact was built: the live segment beside the index.

The FAISS index and the trained catalogue are immutable. Catalogue changes live in a small
segment next to them: new or changed items (their embeddings, categories, ids) and a mask
of base rows that no longer serve (deleted, or superseded by a newer version of the item).
A segment is never modified: every change builds a new one and the retriever swaps it in
as one reference, so a search that started on the old segment finishes on it. The cost of
a change is O(live items + base rows / 8), never a copy of the index.

Live item j has the *virtual row* `base_size + j`: row numbers stay one integer space, so
exclusions, fusion and scoring work on rows as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class LiveSegment:
    base_size: int
    ids: np.ndarray  # int64 (m,) external ids of the live items
    embeddings: np.ndarray  # float32 (m, d)
    categories: np.ndarray  # int64 (m,) indices into category_names
    category_names: tuple[str, ...]  # the base names, then categories first seen live
    dead: np.ndarray  # bool (base_size,): base rows that no longer serve
    dead_rows: np.ndarray = field(init=False)  # int64, sorted: flatnonzero(dead)
    alive: np.ndarray = field(init=False)  # bool (base_size,): ~dead
    _sorted_ids: np.ndarray = field(init=False, repr=False)
    _sorted_pos: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.dead) != self.base_size:
            raise ValueError("dead mask must cover every base row")
        if not (len(self.ids) == len(self.embeddings) == len(self.categories)):
            raise ValueError("live ids, embeddings and categories must have one row per item")
        order = np.argsort(self.ids, kind="stable")
        object.__setattr__(self, "_sorted_ids", self.ids[order])
        object.__setattr__(self, "_sorted_pos", order.astype(np.int64))
        object.__setattr__(self, "dead_rows", np.flatnonzero(self.dead).astype(np.int64))
        object.__setattr__(self, "alive", ~self.dead)

    @classmethod
    def empty(cls, base_size: int, dim: int, category_names: list[str]) -> LiveSegment:
        return cls(
            base_size=base_size,
            ids=np.empty(0, np.int64),
            embeddings=np.empty((0, dim), np.float32),
            categories=np.empty(0, np.int64),
            category_names=tuple(category_names),
            dead=np.zeros(base_size, bool),
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def changed(self) -> bool:
        return len(self.ids) > 0 or len(self.dead_rows) > 0

    def rows_of(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Virtual rows of live ids and which ids are live (unknown rows are 0)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        if len(self._sorted_ids) == 0 or ids.size == 0:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        known = self._sorted_ids[pos] == ids
        return np.where(known, self.base_size + self._sorted_pos[pos], 0), known

    def eligible(
        self,
        exclude_rows: np.ndarray,
        include_categories: np.ndarray,
        exclude_categories: np.ndarray,
    ) -> np.ndarray:
        """Mask over live items; `exclude_rows` may hold any rows (only virtual ones count)."""
        mask = np.ones(len(self.ids), bool)
        if len(include_categories):
            mask &= np.isin(self.categories, include_categories)
        if len(exclude_categories):
            mask &= ~np.isin(self.categories, exclude_categories)
        live = exclude_rows[exclude_rows >= self.base_size] - self.base_size
        mask[live[live < len(mask)]] = False
        return mask

    def top(
        self,
        query: np.ndarray,
        k: int,
        exclude_rows: np.ndarray,
        include_categories: np.ndarray,
        exclude_categories: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k eligible live items as (virtual rows, scores), best first."""
        mask = self.eligible(exclude_rows, include_categories, exclude_categories)
        n = int(mask.sum())
        if n == 0 or k < 1:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        # Score everything, then mask: one matrix-vector product beats gathering rows.
        scores = (self.embeddings @ query).astype(np.float32)
        scores[~mask] = -np.inf
        want = min(k, n)
        top = (
            np.argpartition(-scores, want - 1)[:want]
            if want < len(scores)
            else np.arange(len(scores))
        )
        top = top[mask[top]]
        top = top[np.argsort(-scores[top], kind="stable")]
        return (self.base_size + top).astype(np.int64), scores[top]


def merge_top(
    rows_a: np.ndarray, scores_a: np.ndarray, rows_b: np.ndarray, scores_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k of two disjoint best-first lists (base results and live results)."""
    if len(rows_b) == 0:
        return rows_a[:k], scores_a[:k]
    rows = np.concatenate([rows_a, rows_b]).astype(np.int64)
    scores = np.concatenate([scores_a, scores_b]).astype(np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    return rows[order], scores[order]
