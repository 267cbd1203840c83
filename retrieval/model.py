"""The two-tower model.

Item tower: id + category + brand + price bucket + hashed title words → MLP → unit vector.
The content features (everything but the id) let a brand-new item get a useful embedding.
User tower: the user's recent items (own id + category embeddings, plus a learned
position-from-the-end embedding so recency matters), attention-pooled → MLP → unit vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recdata.items import NUM_PRICE_BUCKETS, TEXT_BUCKETS

MAX_HISTORY = 20


@dataclass
class TwoTowerConfig:
    num_items: int
    num_categories: int
    num_brands: int
    dim: int = 64
    hidden: int = 128
    max_history: int = MAX_HISTORY

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class ItemTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.item = nn.Embedding(cfg.num_items, d)
        self.category = nn.Embedding(cfg.num_categories, d)
        self.brand = nn.Embedding(cfg.num_brands, d)
        self.price = nn.Embedding(NUM_PRICE_BUCKETS, d)
        self.text = nn.EmbeddingBag(TEXT_BUCKETS, d, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.Linear(5 * d, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d))

    def forward(
        self,
        rows: torch.Tensor,
        categories: torch.Tensor,
        brands: torch.Tensor,
        prices: torch.Tensor,
        text_tokens: torch.Tensor,
        use_id: torch.Tensor | None = None,
        use_category: torch.Tensor | None = None,
        use_brand: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The `use_*` masks (1 = known, 0 = zero that part) let an item added after training
        be embedded: it has no trained id vector, and maybe a category or brand the model
        never saw (their index is then a placeholder that the mask zeroes)."""
        item = _masked(self.item(rows), use_id)
        category = _masked(self.category(categories), use_category)
        brand = _masked(self.brand(brands), use_brand)
        x = torch.cat([item, category, brand, self.price(prices), self.text(text_tokens)], dim=-1)
        return F.normalize(self.mlp(x), dim=-1)


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.unsqueeze(-1)


class UserTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.max_history = cfg.max_history
        # Row num_items is padding.
        self.item = nn.Embedding(cfg.num_items + 1, d, padding_idx=cfg.num_items)
        self.category = nn.Embedding(cfg.num_categories + 1, d, padding_idx=cfg.num_categories)
        self.position = nn.Embedding(cfg.max_history, d)
        self.attention = nn.Linear(d, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * d, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, d))

    def forward(self, history: torch.Tensor, history_categories: torch.Tensor) -> torch.Tensor:
        """history: (B, H) item rows right-aligned (newest last), padded with num_items."""
        mask = history != self.item.padding_idx
        positions = torch.arange(history.shape[1] - 1, -1, -1, device=history.device)
        h = self.item(history) + self.category(history_categories) + self.position(positions)
        logits = self.attention(torch.tanh(h)).squeeze(-1).masked_fill(~mask, -1e9)
        weights = torch.softmax(logits, dim=-1) * mask
        attended = (weights.unsqueeze(-1) * h).sum(1)
        last = h[:, -1]  # the newest item, a strong signal for complements
        return F.normalize(self.mlp(torch.cat([attended, last], dim=-1)), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.user = UserTower(cfg)
        self.items = ItemTower(cfg)
        # Learned inverse temperature for the in-batch softmax.
        self.log_scale = nn.Parameter(torch.tensor(3.0))
