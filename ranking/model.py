"""The ranker: target attention over the user's recent items (DIN-style) + item features,
tags and dense features → DCN-v2 cross layers → MLP → one logit per (user, candidate) pair.

The forward pass takes plain tensors (the fields of `RankingBatch`, in order) so that it
exports with `torch.export` and the service runs it without this module (ranking/export.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ranking.features import DENSE_FEATURES, RECENT_COVISITATION_FEATURES, RankingBatch
from recdata.items import NUM_PRICE_BUCKETS

# Up to this many categories (+ padding) target attention runs in category space.
CATEGORY_SPACE_MAX = 256


@dataclass
class RankerConfig:
    num_items: int
    num_categories: int
    num_brands: int
    num_tags: int
    dim: int = 32
    hidden: int = 128
    cross_layers: int = 2  # DCN-v2 cross layers before the MLP; 0 = none (ablation)
    # Low rank (W = U Vᵀ, r = 32 for a 136-wide input): half the cost of full rank and no
    # worse on validation NDCG@10 (docs/evaluation.md); 0 = full-rank d × d.
    cross_rank: int = 32
    # Ablation switches (docs/evaluation.md); both on in the served model.
    use_attention: bool = True  # target attention over history; off = mean of history
    use_tags: bool = True  # tag embedding + tag_affinity feature
    # Co-visitation with the newest 1 and 3 history items as features (off: zeroed).
    recent_covisitation: bool = True

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer: x_{l+1} = x0 ⊙ (W x_l + b) + x_l (Wang et al., 2021).
    It forms explicit bounded-degree feature interactions (e.g. retrieval score × category
    match) that an MLP has to approximate; low rank (W = U Vᵀ) cuts the cost from d² to 2dr."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        if rank > 0:
            self.proj: nn.Module = nn.Sequential(
                nn.Linear(width, rank, bias=False), nn.Linear(rank, width)
            )
        else:
            self.proj = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.proj(x) + x


class Ranker(nn.Module):
    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        # No per-item id vectors: with a few examples per user they memorise instead of
        # generalising; content (category, brand, price, tags) carries over to new items.
        self.category = nn.Embedding(cfg.num_categories + 1, d, padding_idx=cfg.num_categories)
        self.brand = nn.Embedding(cfg.num_brands, d)
        self.price = nn.Embedding(NUM_PRICE_BUCKETS, d)
        self.tags = nn.Linear(max(cfg.num_tags, 1), d, bias=False)
        # Small embedding init: N(0, 1) vectors would drown the dense features at the start.
        for table in (self.category, self.brand, self.price):
            nn.init.normal_(table.weight, std=0.05)
        self.score_weight = nn.Parameter(torch.tensor(10.0))
        width = 4 * d + len(DENSE_FEATURES)
        self.cross = nn.ModuleList(
            CrossLayer(width, cfg.cross_rank) for _ in range(cfg.cross_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(width, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden // 2),
            nn.ReLU(),
            nn.Linear(cfg.hidden // 2, 1),
        )
        # Plain attributes, fixed at export time.
        self._pad_category = cfg.num_categories
        self._scale = 1.0 / math.sqrt(d)
        # Attention in category space while the category table is small (see
        # _target_attention); the per-pair history copy otherwise.
        self._category_space = cfg.num_categories + 1 <= CATEGORY_SPACE_MAX
        # Switched-off features are zeroed (a buffer: moves with .to()).
        mask = torch.ones(len(DENSE_FEATURES))
        if not cfg.use_tags:
            mask[DENSE_FEATURES.index("tag_affinity")] = 0.0
        if not cfg.recent_covisitation:
            for name in RECENT_COVISITATION_FEATURES:
                mask[DENSE_FEATURES.index(name)] = 0.0
        self.register_buffer("feature_mask", mask)
        self._mask_features = bool((mask == 0).any())

    def forward(
        self,
        history_categories: torch.Tensor,
        user_index: torch.Tensor,
        candidate_categories: torch.Tensor,
        candidate_brands: torch.Tensor,
        candidate_prices: torch.Tensor,
        candidate_tags: torch.Tensor,
        dense: torch.Tensor,
    ) -> torch.Tensor:
        """Scores (N,), one per pair. Shapes in `RankingBatch`."""
        cand = (
            self.category(candidate_categories)
            + self.brand(candidate_brands)
            + self.price(candidate_prices)
        )  # (N, d)
        features = dense * self.feature_mask if self._mask_features else dense
        if self.cfg.use_tags:
            cand = cand + self.tags(candidate_tags)
        hist = self.category(history_categories)  # (B, H, d); padding rows are zero
        mask = history_categories != self._pad_category  # (B, H)
        count = mask.sum(1, keepdim=True).clamp(min=1)
        mean_hist = (hist * mask[..., None]).sum(1) / count  # (B, d)
        if self.cfg.use_attention:
            interest = self._target_attention(
                cand, history_categories[user_index], hist, user_index
            )
        else:
            interest = mean_hist[user_index]
        x0 = torch.cat([cand, interest, interest * cand, mean_hist[user_index], features], -1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        # Residual on the retrieval score: at initialisation the ranker reproduces retrieval
        # order, and training learns corrections to it.
        return self.head(x).squeeze(-1) + self.score_weight * dense[:, 0]

    def _target_attention(
        self,
        cand: torch.Tensor,
        pair_categories: torch.Tensor,
        hist: torch.Tensor,
        user_index: torch.Tensor,
    ) -> torch.Tensor:
        """Each pair's candidate attends over its own user's history: softmax over the
        history of (history item · candidate) / sqrt(d), masked at padding → (N, d).

        History items are represented by their category embedding, so with few categories
        the same result comes from category space: (N, categories) similarities gathered at
        the history's categories, and the weights summed per category times the table.
        That never builds the (N, H, d) per-pair history copy, whose memory traffic made
        large batches slower per pair than small ones."""
        pair_mask = pair_categories != self._pad_category  # (N, H)
        if self._category_space:
            table = self.category.weight  # (categories + 1, d); the padding row is zero
            sim = (cand @ table.t()) * self._scale  # (N, categories + 1)
            att = sim.gather(1, pair_categories)
        else:
            pair_hist = hist[user_index]  # (N, H, d)
            att = (pair_hist * cand[:, None, :]).sum(-1) * self._scale
        att = att.masked_fill(~pair_mask, -1e9)
        weights = torch.softmax(att, dim=-1) * pair_mask
        if self._category_space:
            per_category = torch.zeros_like(sim).scatter_add_(1, pair_categories, weights)
            return per_category @ table
        return (weights[..., None] * pair_hist).sum(1)


def forward_batch(model: nn.Module, batch: RankingBatch) -> torch.Tensor:
    """Scores (N,) from the eager `Ranker` or its exported module (same positional inputs)."""
    return model(*batch.tensors())
