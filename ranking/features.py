"""Ranking features, computed from the ItemTable's columns with array ops only.

Every feature is available at request time: the user's recent items (request + feature
store), the candidates' catalogue columns and precomputed tags, and the retrieval score
that travels with each candidate.

Layout. A batch holds B users and N (user, candidate) pairs, flattened: per-user inputs
(the padded history) are (B, H), per-pair inputs are (N, ...) and `user_index` (N,) says
whose pair each row is. So requests with different users and candidate counts concatenate
without padding, and a pair's score depends only on its own row and its user's history.

Dense features per (user, candidate), in this order:
  retrieval_score      inner product from the two-tower model (0 when not sent)
  has_retrieval_score  1 when the caller sent retrieval scores
  log_popularity       log1p(training interactions), scaled to 0..1
  same_category        share of the user's recent items in the candidate's category
  same_brand           share of the user's recent items of the candidate's brand
  tag_affinity         candidate tags · the user's mean tag vector over recent items
  covisitation         log1p of the co-visitation votes of the user's newest items for the
                       candidate (the table ships in the ranking artifact)
  recent_category      recency-weighted same_category: weight 0.7^age over the recent items
                       (newest age 0), normalised to 0..1 — the session's current interest
  covisitation_newest  log1p of the co-visitation similarity to the newest history item alone
  covisitation_recent3 the same over the 3 newest items (decayed like `covisitation`): the
                       very local signal that makes item co-occurrence strong on session data
                       (MovieLens), which the 10-item vote blurs
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from recdata.items import ItemTable
from retrieval.covisitation import CoVisitation

DENSE_FEATURES = (
    "retrieval_score",
    "has_retrieval_score",
    "log_popularity",
    "same_category",
    "same_brand",
    "tag_affinity",
    "covisitation",
    "recent_category",
    "covisitation_newest",
    "covisitation_recent3",
)
# The newest-items co-visitation features (masked out by RankerConfig.recent_covisitation).
RECENT_COVISITATION_FEATURES = ("covisitation_newest", "covisitation_recent3")
MAX_HISTORY = 20
COVIS_COLUMNS = 3  # covisitation, covisitation_newest, covisitation_recent3
RECENCY_DECAY = 0.7


@dataclass
class RankingBatch:
    """The model's inputs, in the order of `Ranker.forward` (see `tensors`)."""

    history_categories: torch.Tensor  # (B, H) int64, padded (left) with num_categories
    user_index: torch.Tensor  # (N,) int64 in [0, B)
    candidate_categories: torch.Tensor  # (N,) int64
    candidate_brands: torch.Tensor  # (N,) int64
    candidate_prices: torch.Tensor  # (N,) int64
    candidate_tags: torch.Tensor  # (N, V) float32, V >= 1
    dense: torch.Tensor  # (N, len(DENSE_FEATURES)) float32

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def to(self, device: torch.device | str) -> RankingBatch:
        if torch.device(device).type == "cpu":
            return self
        return RankingBatch(*(t.to(device, non_blocking=True) for t in self.tensors()))

    @property
    def num_pairs(self) -> int:
        return int(self.user_index.shape[0])


class FeatureBuilder:
    def __init__(
        self,
        items: ItemTable,
        max_history: int = MAX_HISTORY,
        covisitation: CoVisitation | None = None,
        model_vocabulary: tuple[int, int] | None = None,
    ) -> None:
        """`model_vocabulary`: (categories, brands) the model was trained with, when the
        catalogue has grown since (live items, ranking/live_items.py). Features compare the
        real ids; the model reads a category it never saw as its padding (a zero vector)
        and a brand it never saw as the catalogue's most common one."""
        self.items = items
        self.covisitation = covisitation
        self.max_history = max_history
        categories, brands = model_vocabulary or (
            len(items.category_names),
            len(items.brand_names),
        )
        self._model_categories = categories
        self._model_brands = brands
        trained = items.brands[items.brands < brands]
        self._fallback_brand = int(np.bincount(trained).argmax()) if len(trained) else 0
        pop = np.log1p(items.popularity.astype(np.float32))
        self._log_pop = pop / max(float(pop.max()), 1e-6)
        tags = items.tag_matrix
        if tags is None or tags.shape[1] == 0:
            # One all-zero column: a catalogue without tags still gets a well-formed input.
            self._tags = np.zeros((len(items), 1), np.float32)
        else:
            self._tags = tags.astype(np.float32)
        # Oldest → newest weights over the right-aligned history window.
        age = np.arange(max_history - 1, -1, -1, dtype=np.float32)
        self._recency = (RECENCY_DECAY**age).astype(np.float32)

    @property
    def model_vocabulary(self) -> tuple[int, int]:
        """(categories, brands) the model reads; more in the catalogue are live items."""
        return self._model_categories, self._model_brands

    @property
    def num_tags(self) -> int:
        """Width of the candidate tag input (>= 1)."""
        return self._tags.shape[1]

    def build(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        retrieval_scores: np.ndarray | None,
    ) -> RankingBatch:
        """histories: B arrays of rows; candidates: (B, C) rows; scores: (B, C) or None.
        Pairs are row-major: pair i * C + j is user i's candidate j."""
        b, c = candidates.shape
        hist = self._pad(histories)
        user_index = np.repeat(np.arange(b), c)
        covis = self._covisitation(hist, candidates).reshape(-1, COVIS_COLUMNS)
        scores = None if retrieval_scores is None else retrieval_scores.reshape(-1)
        return self._assemble(hist, user_index, candidates.reshape(-1), scores, covis)

    def build_ragged(
        self,
        histories: list[np.ndarray],
        candidates: list[np.ndarray],
        retrieval_scores: list[np.ndarray | None],
    ) -> RankingBatch:
        """One user per entry, each with its own candidate rows and (optional) scores: what
        a micro-batch of Rank calls holds. Pairs are the candidates concatenated in order."""
        hist = self._pad(histories)
        counts = np.array([len(c) for c in candidates], np.int64)
        user_index = np.repeat(np.arange(len(candidates)), counts)
        rows = np.concatenate(candidates).astype(np.int64) if len(candidates) else np.empty(0)
        # Co-visitation per user: its (1, C) table lookup is vectorised; a loop over the
        # users of a batch (tens), never over items.
        covis = np.concatenate(
            [self._covisitation(hist[i : i + 1], c[None, :])[0] for i, c in enumerate(candidates)]
        ).reshape(-1, COVIS_COLUMNS)
        if all(s is None for s in retrieval_scores):
            scores, has = None, None
        else:
            scores = np.concatenate(
                [
                    np.zeros(len(c), np.float32) if s is None else s
                    for c, s in zip(candidates, retrieval_scores, strict=True)
                ]
            )
            has = np.repeat(np.array([s is not None for s in retrieval_scores], np.float32), counts)
        return self._assemble(hist, user_index, rows, scores, covis, has)

    # --- internals -------------------------------------------------------------------------

    def _pad(self, histories: list[np.ndarray]) -> np.ndarray:
        """(B, H) rows, right-aligned (newest last), padded with len(items)."""
        hist = np.full((len(histories), self.max_history), len(self.items), dtype=np.int64)
        for i, h in enumerate(histories):
            recent = h[-self.max_history :]
            if len(recent):
                hist[i, self.max_history - len(recent) :] = recent
        return hist

    def _model_categories_of(self, categories: np.ndarray) -> np.ndarray:
        """Category ids as the model reads them: empty slots (-1) and categories it never
        saw become its padding index."""
        known = (categories >= 0) & (categories < self._model_categories)
        return np.where(known, categories, self._model_categories).astype(np.int64)

    def _covisitation(self, hist: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, C, COVIS_COLUMNS): covisitation, covisitation_newest, covisitation_recent3."""
        if self.covisitation is None:
            return np.zeros((*candidates.shape, COVIS_COLUMNS), np.float32)
        # Items added after training (rows past the co-visitation table) have no
        # co-visitation yet: in a history they count as padding.
        pad = len(self.items)
        hist = np.where(hist < len(self.covisitation.neighbors), hist, pad)
        by_age = self.covisitation.pair_scores_by_age(hist, candidates, pad=pad)  # (B, C, R)
        decay = (self.covisitation.decay ** np.arange(by_age.shape[2])).astype(np.float32)
        recent3 = by_age[..., :3] @ decay[: min(3, len(decay))]
        columns = [by_age @ decay, by_age[..., 0], recent3]
        return np.log1p(np.stack(columns, axis=-1)).astype(np.float32)

    def _assemble(
        self,
        hist: np.ndarray,
        user_index: np.ndarray,
        rows: np.ndarray,
        scores: np.ndarray | None,
        covis: np.ndarray,  # (N, COVIS_COLUMNS)
        has_scores: np.ndarray | None = None,
    ) -> RankingBatch:
        items = self.items
        n_pairs = len(rows)
        valid = hist < len(items)
        safe_hist = np.where(valid, hist, 0)
        hist_cats = np.where(valid, items.categories[safe_hist], -1)  # real ids, -1 = empty
        counts = np.maximum(valid.sum(1), 1).astype(np.float32)  # (B,)
        recency = self._recency[None, :] * valid  # (B, H)
        recency = recency / np.maximum(recency.sum(1, keepdims=True), 1e-6)

        cand_cats = items.categories[rows]
        cand_brands = items.brands[rows]
        # Padding slots never match (a live item of a category the model never saw carries
        # the padding category too: ranking/live_items.py).
        cat_match = hist_cats[user_index] == cand_cats[:, None]  # (N, H)
        same_cat = cat_match.sum(1) / counts[user_index]
        recent_cat = (cat_match * recency[user_index]).sum(1)
        hist_brands = np.where(valid, items.brands[safe_hist], -1)
        same_brand = (hist_brands[user_index] == cand_brands[:, None]).sum(1) / counts[user_index]
        cand_tags = self._tags[rows]  # (N, V)
        profile = (self._tags[safe_hist] * valid[..., None]).sum(1) / counts[:, None]  # (B, V)
        affinity = np.einsum("nv,nv->n", cand_tags, profile[user_index])
        if scores is None:
            scores = np.zeros(n_pairs, np.float32)
            has_scores = np.zeros(n_pairs, np.float32)
        elif has_scores is None:
            has_scores = np.ones(n_pairs, np.float32)
        dense = np.stack(
            [
                scores,
                has_scores,
                self._log_pop[rows],
                same_cat,
                same_brand,
                affinity,
                covis[:, 0],
                recent_cat,
                covis[:, 1],
                covis[:, 2],
            ],
            axis=-1,
        ).astype(np.float32)
        return RankingBatch(
            history_categories=torch.from_numpy(self._model_categories_of(hist_cats)),
            user_index=torch.from_numpy(user_index.astype(np.int64)),
            candidate_categories=torch.from_numpy(self._model_categories_of(cand_cats)),
            candidate_brands=torch.from_numpy(
                np.where(cand_brands < self._model_brands, cand_brands, self._fallback_brand)
            ),
            candidate_prices=torch.from_numpy(items.price_buckets[rows].astype(np.int64)),
            candidate_tags=torch.from_numpy(np.ascontiguousarray(cand_tags)),
            dense=torch.from_numpy(dense),
        )
