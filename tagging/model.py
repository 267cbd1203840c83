"""Bag-of-hashed-n-grams encoder with a small MLP head (fastText-like)."""

from __future__ import annotations

import torch
from torch import nn


class TagModel(nn.Module):
    """Masked mean of feature embeddings -> Linear -> ReLU -> Dropout -> Linear.

    ``known_features`` marks buckets seen often enough in training. Other
    buckets are left out of the mean: their rows were never trained (pure
    init noise) or were trained on a single item (pure memorisation).
    """

    known_features: torch.Tensor

    def __init__(
        self,
        num_buckets: int,
        embed_dim: int,
        hidden_dim: int,
        num_tags: int,
        *,
        dropout: float = 0.1,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.num_tags = num_tags
        # mode="sum" + per-sample weights implements the masked mean.
        # sparse=True lets training touch only the rows a batch uses; a dense
        # Adam step over 2^18 x 64 weights would dominate the training time.
        self.embedding = nn.EmbeddingBag(num_buckets, embed_dim, mode="sum", sparse=sparse)
        self.head = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_tags),
        )
        self.register_buffer("known_features", torch.ones(num_buckets, dtype=torch.bool))
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def set_known_features(self, mask: torch.Tensor) -> None:
        if mask.shape != (self.num_buckets,):
            raise ValueError("mask must have one entry per bucket")
        self.known_features.copy_(mask.to(torch.bool))

    def bag_weights(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """1/(#known features in bag) for known features, 0 otherwise."""
        ends = torch.cat([offsets[1:], offsets.new_tensor([indices.numel()])])
        bag_ids = torch.repeat_interleave(
            torch.arange(offsets.numel(), device=offsets.device), ends - offsets
        )
        known = self.known_features[indices].to(self.embedding.weight.dtype)
        counts = torch.zeros(offsets.numel(), dtype=known.dtype, device=known.device)
        counts.index_add_(0, bag_ids, known)
        return known / counts.clamp_min(1.0)[bag_ids]

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        weights = self.bag_weights(indices, offsets)
        return self.head(self.embedding(indices, offsets, per_sample_weights=weights))
