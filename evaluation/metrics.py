"""Top-K metrics for one held-out target per user (leave-last-out).

`ranked` is (users, K) item rows best first, -1 where a list is shorter; `targets` is
(users,). With a single relevant item, Recall@K is a hit rate and the ideal DCG is 1.
"""

from __future__ import annotations

import numpy as np


def _hits(ranked: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    return ranked[:, :k] == targets[:, None]


def recall_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    if len(targets) == 0:
        return 0.0
    return float(_hits(ranked, targets, k).any(axis=1).mean())


def ndcg_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    if len(targets) == 0:
        return 0.0
    hits = _hits(ranked, targets, k)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    return float((hits * discounts).sum(axis=1).mean())


def coverage_at_k(ranked: np.ndarray, k: int, num_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    top = ranked[:, :k]
    return float(len(np.unique(top[top >= 0])) / max(num_items, 1))


def summarize(
    ranked: np.ndarray,
    targets: np.ndarray,
    num_items: int,
    recall_ks: tuple[int, ...] = (10, 20, 50),
    ndcg_ks: tuple[int, ...] = (10, 20),
) -> dict[str, float]:
    out = {f"recall@{k}": recall_at_k(ranked, targets, k) for k in recall_ks}
    out.update({f"ndcg@{k}": ndcg_at_k(ranked, targets, k) for k in ndcg_ks})
    out["coverage@20"] = coverage_at_k(ranked, 20, num_items)
    return {k: round(v, 4) for k, v in out.items()}
