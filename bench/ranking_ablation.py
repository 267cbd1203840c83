"""Ranker ablation: the served pipeline's metrics with one part of the ranker removed.

Retrieval is trained once (or reused: the artifact `recserve eval` left under --artifacts
for the same data) and stays fixed; each variant retrains only the ranker exactly as
`recserve train` does (same examples, negatives and seeds), writes it into a copy of the
version and evaluates that copy with the `recserve eval` harness (retrieval top-200 →
ranker, full catalogue). The "served ranker" row is the artifact itself, so it equals the
evaluation table's row. Prints a markdown table. Not a test.

    .venv/bin/python -m bench.ranking_ablation --dataset movielens \\
        --data ../shared/data/movielens-latest-small --artifacts /tmp/ev-movielens
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from bench.ranker_selection import retrain_ranker
from evaluation.harness import (
    RANKING_ROW,
    RETRIEVAL_ROW,
    EvaluationReport,
    EvaluationSet,
    evaluate_served_pipeline,
)
from evaluation.report import trained_version
from pipeline.train import TrainingConfig
from recdata.items import ItemTable
from recdata.loaders import load_dataset
from recdata.schema import Dataset
from recdata.split import leave_last_out, user_sequences

VARIANTS = {
    "served ranker": None,  # the artifact as trained
    # The same configuration retrained by this script: how far a retrain alone moves the
    # numbers (the other rows differ from this one by one switch).
    "served configuration, retrained here": {},
    "without DCN cross layers (MLP only)": {"cross_layers": 0},
    "without target attention (mean of history)": {"use_attention": False},
    "without tags (embedding + tag affinity)": {"use_tags": False},
    "without hard negatives (random only)": {"hard_negatives": 0, "random_negatives": 10},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--artifacts", type=Path, default=None, help="reuse a version trained on this data"
    )
    args = parser.parse_args()
    dataset: Dataset
    if args.dataset == "synthetic":
        from recdata.synthetic import generate

        dataset = generate()
    else:
        dataset = load_dataset(args.dataset, args.data)[0]
    config = TrainingConfig.for_dataset(args.dataset)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.artifacts or Path(scratch) / "artifacts"
        version_dir = trained_version(dataset, root, config, False, lambda _: None)
        items = ItemTable.load(version_dir / "items")
        split = leave_last_out(user_sequences(dataset.interactions, items))
        eval_set = EvaluationSet.from_split(split, items.popularity)
        print(f"| {dataset.name} | recall@10 | recall@50 | ndcg@10 | ndcg@20 |")
        print("|---|---|---|---|---|")
        retrieval_row = None
        for name, changes in VARIANTS.items():
            evaluated = version_dir
            if changes is not None:
                ranker = dataclasses.replace(config.ranker, **changes)
                evaluated, _ = retrain_ranker(
                    version_dir,
                    split,
                    items,
                    config,
                    ranker,
                    Path(scratch) / name[:20],
                    seed=config.two_tower.seed,
                )
            report = EvaluationReport(len(eval_set.targets), int(eval_set.cold_targets.sum()))
            evaluate_served_pipeline(evaluated, eval_set, report, lambda _: None)
            retrieval_row = report.rows[RETRIEVAL_ROW]
            m = report.rows[RANKING_ROW]
            print(
                f"| {name} | {m['recall@10']:.4f} | {m['recall@50']:.4f} | {m['ndcg@10']:.4f} "
                f"| {m['ndcg@20']:.4f} |",
                flush=True,
            )
        m = retrieval_row
        assert m is not None
        print(
            f"| retrieval order (no ranker) | {m['recall@10']:.4f} | {m['recall@50']:.4f} "
            f"| {m['ndcg@10']:.4f} | {m['ndcg@20']:.4f} |"
        )
        print(f"\nartifact {version_dir.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
