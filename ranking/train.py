"""Ranker training: listwise softmax over the true next item and negatives drawn from
retrieval's own candidates (hard) plus random items; early stopping on validation NDCG@10."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.metrics import ndcg_at_k
from ranking.features import FeatureBuilder
from ranking.model import Ranker, RankerConfig
from recdata.items import ItemTable
from retrieval.covisitation import CoVisitation

Progress = Callable[[str], None]


@dataclass
class RankerTrainConfig:
    epochs: int = 8
    batch_size: int = 256
    lr: float = 2e-3
    dim: int = 32
    hard_negatives: int = 8  # 32 for MovieLens: TrainingConfig.for_dataset
    random_negatives: int = 2
    examples_per_user: int = 10  # the most recent positions, held out from retrieval training
    patience: int = 2
    drop_retrieval_score: float = 0.1  # so a caller without scores still gets good order
    seed: int = 0
    cross_layers: int = 2  # DCN-v2 cross layers (0: none), see RankerConfig
    cross_rank: int = 32  # low-rank cross weights (0: full rank), see RankerConfig
    use_attention: bool = True  # ablation switches, see RankerConfig
    use_tags: bool = True
    recent_covisitation: bool = True  # newest-items co-visitation features, see RankerConfig


@dataclass
class RankingExamples:
    histories: list[np.ndarray]
    candidates: np.ndarray  # (n, 1 + negatives) rows; column 0 is the positive
    scores: np.ndarray  # (n, 1 + negatives) retrieval scores


@dataclass
class RankingValidation:
    histories: list[np.ndarray]
    candidates: np.ndarray  # (n, K) retrieval top-K rows (-1 padded)
    scores: np.ndarray  # (n, K)
    targets: np.ndarray  # (n,)


def sample_negatives(
    targets: np.ndarray,
    retrieved: np.ndarray,
    num_items: int,
    cfg: RankerTrainConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n, 1 + hard + random) rows; hard ones from retrieval's candidates, never the target."""
    n = len(targets)
    out = np.empty((n, 1 + cfg.hard_negatives + cfg.random_negatives), dtype=np.int64)
    out[:, 0] = targets
    for i in range(n):
        pool = retrieved[i][(retrieved[i] >= 0) & (retrieved[i] != targets[i])]
        hard = (
            rng.choice(pool, cfg.hard_negatives, replace=len(pool) < cfg.hard_negatives)
            if len(pool)
            else rng.integers(0, num_items, cfg.hard_negatives)
        )
        out[i, 1 : 1 + cfg.hard_negatives] = hard
    randoms = rng.integers(0, num_items, (n, cfg.random_negatives))
    randoms = np.where(randoms == targets[:, None], (randoms + 1) % num_items, randoms)
    out[:, 1 + cfg.hard_negatives :] = randoms
    return out


def _rerank_ndcg(
    model: Ranker, features: FeatureBuilder, val: RankingValidation, k: int = 10
) -> float:
    model.eval()
    ranked = rerank(model, features, val.histories, val.candidates, val.scores)
    return ndcg_at_k(ranked, val.targets, k)


@torch.inference_mode()
def rerank(
    model: nn.Module,
    features: FeatureBuilder,
    histories: list[np.ndarray],
    candidates: np.ndarray,
    scores: np.ndarray | None,
    batch_size: int = 256,
) -> np.ndarray:
    """Reorder each row of candidates (-1 padded) by the ranker (eager or exported, in
    eval mode); returns rows, -1 last."""
    out = np.full(candidates.shape, -1, dtype=np.int64)
    for start in range(0, len(candidates), batch_size):
        sl = slice(start, start + batch_size)
        cand = candidates[sl]
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        batch = features.build(histories[sl], safe, None if scores is None else scores[sl])
        logits = model(*batch.tensors()).numpy().reshape(cand.shape)
        logits = np.where(valid, logits, -np.inf)
        order = np.argsort(-logits, axis=1, kind="stable")
        out[sl] = np.where(
            np.take_along_axis(valid, order, 1), np.take_along_axis(cand, order, 1), -1
        )
    return out


def train_ranker(
    examples: RankingExamples,
    validation: RankingValidation,
    items: ItemTable,
    cfg: RankerTrainConfig,
    progress: Progress | None = None,
    covisitation: CoVisitation | None = None,
) -> tuple[Ranker, dict[str, float]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    features = FeatureBuilder(items, covisitation=covisitation)
    model = Ranker(
        RankerConfig(
            num_items=len(items),
            num_categories=len(items.category_names),
            num_brands=len(items.brand_names),
            num_tags=features.num_tags,
            dim=cfg.dim,
            cross_layers=cfg.cross_layers,
            cross_rank=cfg.cross_rank,
            use_attention=cfg.use_attention,
            use_tags=cfg.use_tags,
            recent_covisitation=cfg.recent_covisitation,
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = len(examples.candidates)
    best_state, best_ndcg, bad_epochs = copy.deepcopy(model.state_dict()), -1.0, 0
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(n)
        total, batches = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            scores = examples.scores[idx].copy()
            drop = rng.random(len(idx)) < cfg.drop_retrieval_score
            batch = features.build(
                [examples.histories[i] for i in idx], examples.candidates[idx], scores
            )
            batch.dense[torch.from_numpy(drop)[batch.user_index], :2] = 0.0
            logits = model(*batch.tensors()).view(len(idx), -1)
            loss = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        ndcg = _rerank_ndcg(model, features, validation)
        if progress:
            progress(
                f"ranker epoch {epoch + 1}/{cfg.epochs}: loss {total / batches:.3f}, "
                f"validation NDCG@10 {ndcg:.4f} ({time.perf_counter() - started:.1f}s)"
            )
        if ndcg > best_ndcg:
            best_ndcg, best_state, bad_epochs = ndcg, copy.deepcopy(model.state_dict()), 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"validation_ndcg@10": round(best_ndcg, 4)}
