"""Ranking features, computed from the ItemTable's columns with array ops only.

Every feature is available at request time: the user's recent items (request + feature
store), the candidates' catalogue columns and precomputed tags, and the retrieval score
that travels with each candidate.

Dense features per (user, candidate), in this order:
  retrieval_score      inner product from the two-tower model (0 when not sent)
  has_retrieval_score  1 when the caller sent retrieval scores
  log_popularity       log1p(training interactions), scaled to 0..1
  same_category        share of the user's recent items in the candidate's category
  same_brand           share of the user's recent items of the candidate's brand
  tag_affinity         candidate tags · the user's mean tag vector over recent items
  covisitation         log1p of the co-visitation votes of the user's newest items for the
                       candidate (the table ships in the ranking artifact)
"""

from __future__ import annotations

from dataclasses import dataclass

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
)
MAX_HISTORY = 20


@dataclass
class RankingBatch:
    history: torch.Tensor  # (B, H) item rows, padded with len(items)
    history_categories: torch.Tensor  # (B, H)
    candidates: torch.Tensor  # (B, C) item rows
    candidate_categories: torch.Tensor
    candidate_brands: torch.Tensor
    candidate_prices: torch.Tensor
    candidate_tags: torch.Tensor  # (B, C, V) float
    dense: torch.Tensor  # (B, C, len(DENSE_FEATURES))


class FeatureBuilder:
    def __init__(
        self,
        items: ItemTable,
        max_history: int = MAX_HISTORY,
        covisitation: CoVisitation | None = None,
    ) -> None:
        self.items = items
        self.covisitation = covisitation
        self.max_history = max_history
        pop = np.log1p(items.popularity.astype(np.float32))
        self._log_pop = pop / max(float(pop.max()), 1e-6)
        tags = items.tag_matrix
        self._tags = (
            tags.astype(np.float32) if tags is not None else np.zeros((len(items), 0), np.float32)
        )

    @property
    def num_tags(self) -> int:
        return self._tags.shape[1]

    def build(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        retrieval_scores: np.ndarray | None,
    ) -> RankingBatch:
        """histories: B arrays of rows; candidates: (B, C) rows; scores: (B, C) or None."""
        items = self.items
        n, pad_cat = len(items), len(items.category_names)
        b, c = candidates.shape
        hist = np.full((b, self.max_history), n, dtype=np.int64)
        for i, h in enumerate(histories):
            recent = h[-self.max_history :]
            if len(recent):
                hist[i, self.max_history - len(recent) :] = recent
        valid = hist < n
        safe_hist = np.where(valid, hist, 0)
        hist_cats = np.where(valid, items.categories[safe_hist], pad_cat)
        counts = np.maximum(valid.sum(1, keepdims=True), 1).astype(np.float32)

        cand_cats = items.categories[candidates]
        cand_brands = items.brands[candidates]
        same_cat = (hist_cats[:, None, :] == cand_cats[:, :, None]).sum(-1) / counts
        hist_brands = np.where(valid, items.brands[safe_hist], -1)
        same_brand = (hist_brands[:, None, :] == cand_brands[:, :, None]).sum(-1) / counts
        cand_tags = self._tags[candidates]  # (B, C, V)
        profile = (self._tags[safe_hist] * valid[..., None]).sum(1) / counts  # (B, V)
        affinity = np.einsum("bcv,bv->bc", cand_tags, profile)
        if retrieval_scores is None:
            scores = np.zeros((b, c), np.float32)
            has_scores = np.zeros((b, c), np.float32)
        else:
            scores = retrieval_scores.astype(np.float32)
            has_scores = np.ones((b, c), np.float32)
        if self.covisitation is not None:
            covis = np.log1p(self.covisitation.pair_scores(hist, candidates, pad=n))
        else:
            covis = np.zeros((b, c), np.float32)
        dense = np.stack(
            [scores, has_scores, self._log_pop[candidates], same_cat, same_brand, affinity, covis],
            axis=-1,
        ).astype(np.float32)
        return RankingBatch(
            history=torch.from_numpy(hist),
            history_categories=torch.from_numpy(hist_cats),
            candidates=torch.from_numpy(candidates.astype(np.int64)),
            candidate_categories=torch.from_numpy(cand_cats),
            candidate_brands=torch.from_numpy(cand_brands),
            candidate_prices=torch.from_numpy(items.price_buckets[candidates]),
            candidate_tags=torch.from_numpy(cand_tags),
            dense=torch.from_numpy(dense),
        )
