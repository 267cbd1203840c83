"""Ranker ablation: the served pipeline's metrics with one part of the ranker removed.

Each variant trains a full artifact (same data, same seeds) and evaluates it with the
`recserve eval` harness; prints a markdown table. Not a test.

    .venv/bin/python bench/ranking_ablation.py --dataset movielens \\
        --data ../shared/data/movielens-latest-small
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from evaluation.harness import RANKING_ROW, RETRIEVAL_ROW
from evaluation.report import run_evaluation
from pipeline.train import TrainingConfig
from recdata.loaders import load_dataset
from recdata.synthetic import generate

VARIANTS = {
    "served ranker": {},
    "without target attention (mean of history)": {"use_attention": False},
    "without tags (embedding + tag affinity)": {"use_tags": False},
    "without hard negatives (random only)": {"hard_negatives": 0, "random_negatives": 10},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    dataset = (
        generate() if args.dataset == "synthetic" else load_dataset(args.dataset, args.data)[0]
    )
    print(f"| {dataset.name} | recall@10 | recall@50 | ndcg@10 | ndcg@20 |")
    print("|---|---|---|---|---|")
    retrieval_row = None
    for name, changes in VARIANTS.items():
        config = TrainingConfig()
        config.ranker = dataclasses.replace(config.ranker, **changes)
        with tempfile.TemporaryDirectory() as root:
            result = run_evaluation(
                dataset, Path(root), config, [], None, True, False, progress=lambda _: None
            )
        rows = result.recommendation.rows
        retrieval_row = rows[RETRIEVAL_ROW]
        m = rows[RANKING_ROW]
        print(
            f"| {name} | {m['recall@10']:.4f} | {m['recall@50']:.4f} | {m['ndcg@10']:.4f} "
            f"| {m['ndcg@20']:.4f} |",
            flush=True,
        )
    m = retrieval_row
    print(
        f"| retrieval order (no ranker) | {m['recall@10']:.4f} | {m['recall@50']:.4f} "
        f"| {m['ndcg@10']:.4f} | {m['ndcg@20']:.4f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
