"""The ranker: target attention over the user's recent items (DIN-style) + item features,
tags and dense features → MLP → one logit per candidate."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ranking.features import DENSE_FEATURES, RankingBatch
from recdata.items import NUM_PRICE_BUCKETS


@dataclass
class RankerConfig:
    num_items: int
    num_categories: int
    num_brands: int
    num_tags: int
    dim: int = 32
    hidden: int = 128
    # Ablation switches (docs/evaluation.md); both on in the served model.
    use_attention: bool = True  # target attention over history; off = mean of history
    use_tags: bool = True  # tag embedding + tag_affinity feature

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Ranker(nn.Module):
    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.item = nn.Embedding(cfg.num_items + 1, d, padding_idx=cfg.num_items)
        self.category = nn.Embedding(cfg.num_categories + 1, d, padding_idx=cfg.num_categories)
        self.brand = nn.Embedding(cfg.num_brands, d)
        self.price = nn.Embedding(NUM_PRICE_BUCKETS, d)
        self.tags = nn.Linear(max(cfg.num_tags, 1), d, bias=False)
        # Small embedding init: N(0, 1) vectors would drown the dense features at the start.
        for table in (self.item, self.category, self.brand, self.price):
            nn.init.normal_(table.weight, std=0.05)
        self.score_weight = nn.Parameter(torch.tensor(10.0))
        n_dense = len(DENSE_FEATURES)
        self.head = nn.Sequential(
            nn.Linear(4 * d + n_dense, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden // 2),
            nn.ReLU(),
            nn.Linear(cfg.hidden // 2, 1),
        )

    def forward(self, batch: RankingBatch) -> torch.Tensor:
        """Scores (B, C)."""
        tags = batch.candidate_tags
        if tags.shape[-1] == 0:  # a catalogue without tags still gets a well-formed input
            tags = torch.zeros((*tags.shape[:-1], 1))
        # No per-item id vectors: with a few examples per user they memorise instead of
        # generalising; content (category, brand, price, tags) carries over to new items.
        cand = (
            self.category(batch.candidate_categories)
            + self.brand(batch.candidate_brands)
            + self.price(batch.candidate_prices)
        )
        dense = batch.dense
        if self.cfg.use_tags:
            cand = cand + self.tags(tags)
        else:
            dense = dense.clone()
            dense[..., DENSE_FEATURES.index("tag_affinity")] = 0.0
        hist = self.category(batch.history_categories)
        mask = batch.history != self.cfg.num_items  # (B, H)
        att = torch.einsum("bcd,bhd->bch", cand, hist) / math.sqrt(self.cfg.dim)
        att = att.masked_fill(~mask[:, None, :], -1e9)
        weights = torch.softmax(att, dim=-1) * mask[:, None, :]
        mean_hist = (hist * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        mean_hist = mean_hist[:, None, :].expand_as(cand)
        if self.cfg.use_attention:
            interest = torch.einsum("bch,bhd->bcd", weights, hist)
        else:
            interest = mean_hist
        x = torch.cat([cand, interest, interest * cand, mean_hist, dense], dim=-1)
        # Residual on the retrieval score: at initialisation the ranker reproduces retrieval
        # order, and training learns corrections to it.
        return self.head(x).squeeze(-1) + self.score_weight * batch.dense[..., 0]
