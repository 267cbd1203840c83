"""Offline evaluation of the served pipeline against baselines, in one harness and split.

Time-based leave-last-out: each user's last event is the test target, the one before it
validation (used by training), the rest training. Every model ranks the full catalogue for
every user, with the user's own history excluded (as the gateway serves). Our rows load the
artifact directory through the same classes the services use (Retriever, RankingScorer).

Two targets (`EvaluationSet.from_split(target=...)`):
  test        histories = training events + the validation event; targets = the last event.
  validation  histories = training events only; targets = the second-to-last event. For
              choosing between model variants without looking at the test target. The
              ranker early-stops on these same targets (validation NDCG@10), so its
              validation numbers are slightly optimistic; every ranker variant shares that
              bias, and no model ever trains on a validation event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.metrics import recall_at_k, summarize
from ranking.scorer import RankingScorer
from ranking.train import rerank
from recdata.items import ItemTable
from recdata.split import LeaveLastOutSplit
from retrieval.retriever import Retriever

Progress = Callable[[str], None]

RECALL_KS = (10, 20, 50)
RETRIEVAL_RECALL_KS = (10, 20, 50, 100, 200, 500)
RANKING_CANDIDATES = 200
RETRIEVAL_ROW = "retrieval (two-tower + FAISS, fused with co-visitation)"
RANKING_ROW = f"retrieval top-{RANKING_CANDIDATES} + ranking (served)"
TARGETS = ("test", "validation")


@dataclass
class EvaluationSet:
    """Histories and held-out targets: by default at test time (training events + the
    validation event → the test target); with target="validation", training events →
    the validation target."""

    histories: list[np.ndarray]
    targets: np.ndarray
    cold_targets: np.ndarray  # bool: the target never occurs in training (cold-start item)
    target: str = "test"

    @classmethod
    def from_split(
        cls,
        split: LeaveLastOutSplit,
        popularity: np.ndarray,
        max_users: int | None = None,
        seed: int = 0,
        target: str = "test",
    ) -> EvaluationSet:
        """`popularity`: training-event counts per item (cold = 0)."""
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose from {list(TARGETS)}")
        n = len(split.train.user_ids)
        users = np.arange(n)
        if max_users is not None and n > max_users:
            users = np.sort(np.random.default_rng(seed).choice(n, max_users, replace=False))
        if target == "validation":
            histories = [split.train.sequences[u] for u in users]
            targets = split.validation_targets[users]
        else:
            histories = [
                np.concatenate([split.train.sequences[u], [split.validation_targets[u]]])
                for u in users
            ]
            targets = split.test_targets[users]
        return cls(histories, targets, popularity[targets] == 0, target)

    def exclusions(self) -> list[np.ndarray]:
        return [np.unique(h) for h in self.histories]


@dataclass
class EvaluationReport:
    users: int
    cold_target_users: int
    target: str = "test"
    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    cold_start_recall50: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(
        self,
        name: str,
        ranked: np.ndarray,
        eval_set: EvaluationSet,
        num_items: int,
        recall_ks: Iterable[int],
        seconds: float,
    ) -> None:
        self.rows[name] = summarize(ranked, eval_set.targets, num_items, tuple(recall_ks))
        cold = eval_set.cold_targets
        self.cold_start_recall50[name] = (
            round(recall_at_k(ranked[cold], eval_set.targets[cold], 50), 4) if cold.any() else 0.0
        )
        self.seconds[name] = round(seconds, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "users": self.users,
            "cold_target_users": self.cold_target_users,
            "rows": self.rows,
            "cold_start_recall@50": self.cold_start_recall50,
            "seconds": self.seconds,
        }

    def markdown(self) -> str:
        columns = [
            "recall@10",
            "recall@20",
            "recall@50",
            "ndcg@10",
            "ndcg@20",
            "coverage@20",
            "recall@200",
            "recall@500",
        ]
        lines = [
            "| model | " + " | ".join(columns) + " | cold-start recall@50 |",
            "|---|" + "---|" * (len(columns) + 1),
        ]
        for name, metrics in self.rows.items():
            cells = [f"{metrics[c]:.4f}" if c in metrics else "–" for c in columns]
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {self.cold_start_recall50[name]:.4f} |"
            )
        lines.append(
            f"\n{self.users} users ({self.target} target); {self.cold_target_users} of them "
            "have a target never seen in training (cold-start items)."
        )
        return "\n".join(lines)


def evaluate_served_pipeline(
    version_dir: Path, eval_set: EvaluationSet, report: EvaluationReport, progress: Progress
) -> None:
    """Retrieval alone and retrieval + ranking, from the artifacts the services load."""
    retriever = Retriever.load(version_dir, device="cpu")
    items = retriever.items
    started = time.perf_counter()
    retrieved, _ = retriever.retrieve_rows_many(eval_set.histories, max(RETRIEVAL_RECALL_KS))
    report.add(
        RETRIEVAL_ROW,
        retrieved,
        eval_set,
        len(items),
        RETRIEVAL_RECALL_KS,
        time.perf_counter() - started,
    )
    progress(f"retrieval alone: {report.rows[RETRIEVAL_ROW]}")

    scorer = RankingScorer.load(version_dir)
    started = time.perf_counter()
    # The served pipeline asks retrieval for exactly RANKING_CANDIDATES, then ranks them.
    candidates, scores = retriever.retrieve_rows_many(eval_set.histories, RANKING_CANDIDATES)
    reranked = rerank(scorer.model, scorer.features, eval_set.histories, candidates, scores)
    name = RANKING_ROW
    report.add(name, reranked, eval_set, len(items), RECALL_KS, time.perf_counter() - started)
    progress(f"retrieval + ranking: {report.rows[name]}")


def evaluate_baselines(
    split: LeaveLastOutSplit,
    items: ItemTable,
    eval_set: EvaluationSet,
    report: EvaluationReport,
    names: Iterable[str],
    progress: Progress,
) -> None:
    from evaluation.baselines import BASELINES

    for name in names:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {sorted(BASELINES)}")
        started = time.perf_counter()
        model = BASELINES[name]()
        model.fit(split.train, len(items))
        ranked = model.recommend(eval_set.histories, max(RETRIEVAL_RECALL_KS))
        report.add(
            f"baseline: {name}",
            ranked,
            eval_set,
            len(items),
            RETRIEVAL_RECALL_KS,
            time.perf_counter() - started,
        )
        progress(f"baseline {name}: {report.rows[f'baseline: {name}']}")
