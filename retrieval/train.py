"""Two-tower training: in-batch softmax with a log-popularity correction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recdata.errors import TooLittleData
from recdata.items import ItemTable
from recdata.split import UserSequences
from retrieval.history import pad_histories
from retrieval.model import TwoTower, TwoTowerConfig

Progress = Callable[[str], None]


@dataclass
class TwoTowerTrainConfig:
    epochs: int = 10
    batch_size: int = 512
    lr: float = 3e-3
    dim: int = 64
    seed: int = 0
    id_dropout: float = 0.2  # teaches the item tower to work from content alone (new items)
    max_examples_per_user: int = 1000


def training_examples(
    train: UserSequences, max_per_user: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """(history prefix, next item) pairs; long users are subsampled so they do not dominate."""
    histories: list[np.ndarray] = []
    targets: list[int] = []
    for seq in train.sequences:
        positions = np.arange(1, len(seq))
        if len(positions) > max_per_user:
            positions = np.sort(rng.choice(positions, max_per_user, replace=False))
        for t in positions:
            histories.append(seq[:t])
            targets.append(int(seq[t]))
    return histories, np.array(targets, dtype=np.int64)


def item_feature_tensors(items: ItemTable) -> dict[str, torch.Tensor]:
    return {
        "categories": torch.from_numpy(items.categories),
        "brands": torch.from_numpy(items.brands),
        "prices": torch.from_numpy(items.price_buckets),
        "text_tokens": torch.from_numpy(items.text_tokens),
    }


def encode_items(
    model: TwoTower,
    items: ItemTable,
    rows: torch.Tensor,
    features: dict[str, torch.Tensor],
    use_id: torch.Tensor | None = None,
) -> torch.Tensor:
    return model.items(
        rows,
        features["categories"][rows],
        features["brands"][rows],
        features["prices"][rows],
        features["text_tokens"][rows],
        use_id,
    )


def train_two_tower(
    train: UserSequences,
    items: ItemTable,
    config: TwoTowerTrainConfig,
    progress: Progress | None = None,
) -> TwoTower:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model_cfg = TwoTowerConfig(
        num_items=len(items),
        num_categories=len(items.category_names),
        num_brands=len(items.brand_names),
        dim=config.dim,
    )
    model = TwoTower(model_cfg)
    histories, targets = training_examples(train, config.max_examples_per_user, rng)
    if len(targets) == 0:
        raise TooLittleData("no two-tower training examples: no user has 2 or more training events")
    hist_rows, hist_cats = pad_histories(histories, items, model_cfg.max_history)
    target_t = torch.from_numpy(targets)
    features = item_feature_tensors(items)
    # logQ correction: in-batch negatives are sampled in proportion to popularity.
    counts = np.bincount(targets, minlength=len(items)).astype(np.float64) + 1.0
    log_q = torch.from_numpy(np.log(counts / counts.sum())).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    n = len(targets)
    for epoch in range(config.epochs):
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n))
        total, batches = 0.0, 0
        model.train()
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            tgt = target_t[idx]
            user = model.user(hist_rows[idx], hist_cats[idx])
            use_id = (torch.rand(len(idx)) >= config.id_dropout).float()
            item = encode_items(model, items, tgt, features, use_id)
            logits = model.log_scale.exp() * user @ item.T - log_q[tgt].unsqueeze(0)
            same = tgt.unsqueeze(0) == tgt.unsqueeze(1)
            logits = logits.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e9)
            loss = F.cross_entropy(logits, torch.arange(len(idx)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        if progress:
            progress(
                f"two-tower epoch {epoch + 1}/{config.epochs}: loss {total / batches:.3f} "
                f"({n} examples, {time.perf_counter() - started:.1f}s)"
            )
    model.eval()
    return model


@torch.inference_mode()
def item_embeddings(model: TwoTower, items: ItemTable, batch_size: int = 8192) -> np.ndarray:
    features = item_feature_tensors(items)
    out = []
    for start in range(0, len(items), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(items)))
        out.append(encode_items(model, items, rows, features))
    return torch.cat(out).numpy().astype(np.float32)


@torch.inference_mode()
def user_embeddings(
    model: TwoTower, histories: list[np.ndarray], items: ItemTable, batch_size: int = 4096
) -> np.ndarray:
    out = []
    for start in range(0, len(histories), batch_size):
        rows, cats = pad_histories(
            histories[start : start + batch_size], items, model.cfg.max_history
        )
        out.append(model.user(rows, cats))
    if not out:  # no histories (an empty validation sample, say): no rows, same width
        return np.zeros((0, model.cfg.dim), np.float32)
    return torch.cat(out).numpy().astype(np.float32)
