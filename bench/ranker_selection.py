"""Ranker variant selection on the validation target: retrieval fixed, ranker retrained.

For choosing a ranker configuration without looking at the test target (issue 3). Takes a
version `recserve eval`/`recserve train` left under --artifacts (its retrieval, co-visitation
and catalogue stay fixed), retrains only the ranker for each variant × seed exactly as
`recserve train` does (`retrain_ranker`, shared with bench/ranking_ablation.py: examples
from each user's last training positions, candidates from the retrieval service's own list), writes
it into a copy of the version and evaluates the served pipeline (Retriever top-200 →
RankingScorer) with the `recserve eval` harness on the chosen target (validation by
default: histories = training events, targets = each user's second-to-last event). Seed s
seeds the ranker's initialisation, batch order and negative sampling. Prints one markdown
row per run and a mean per variant. Not a test; single-threaded (OMP_NUM_THREADS=1).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ranker_selection.py --dataset movielens \\
        --data ../shared/data/movielens-latest-small --artifacts /tmp/ev-movielens \\
        --variants previous newest-covis --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.harness import (
    RANKING_ROW,
    RETRIEVAL_ROW,
    EvaluationReport,
    EvaluationSet,
    evaluate_served_pipeline,
)
from pipeline.train import (
    TrainingConfig,
    _ranking_data,
    candidate_retriever,
    retrieval_training_events,
    train_all,
)
from ranking.features import DENSE_FEATURES
from ranking.scorer import save_ranker
from ranking.train import RankerTrainConfig, train_ranker
from recdata.artifacts import resolve
from recdata.items import ItemTable
from recdata.split import LeaveLastOutSplit, leave_last_out, user_sequences
from retrieval.covisitation import CoVisitation
from retrieval.index import ItemIndex, build_index, index_config
from retrieval.retriever import Retriever
from retrieval.train import TwoTowerTrainConfig, item_embeddings, train_two_tower

# Each variant spells out every knob issue 3 compared, so a name means the same whatever
# the current defaults are. TrainingConfig fields: covisitation_neighbours (both
# co-visitation tables refitted that wide: retrieval's second source and the ranker's
# features) and retrieval_on_all_events (changes retrieval training: --retrain-all only);
# the rest are RankerTrainConfig fields.
PREVIOUS: dict[str, Any] = {  # the defaults before issue 3
    "recent_covisitation": False,
    "covisitation_neighbours": 100,
    "retrieval_on_all_events": False,
    "hard_negatives": 8,
    "random_negatives": 2,
}
NEWEST = {**PREVIOUS, "recent_covisitation": True}
HARD32 = {"hard_negatives": 32, "random_negatives": 4}
VARIANTS: dict[str, dict[str, Any]] = {
    "previous": PREVIOUS,
    "newest-covis": NEWEST,
    "hard32": {**NEWEST, **HARD32},
    "hard64": {**NEWEST, "hard_negatives": 64, "random_negatives": 8},
    "covis300": {**NEWEST, "covisitation_neighbours": 300},
    "covis300-hard32": {**NEWEST, "covisitation_neighbours": 300, **HARD32},
    "retrieval-all-events": {**NEWEST, "retrieval_on_all_events": True},
    "retrieval-all-events-covis300-hard32": {
        **NEWEST,
        "retrieval_on_all_events": True,
        "covisitation_neighbours": 300,
        **HARD32,
    },
}


def retrain_ranker(
    version_dir: Path,
    split: LeaveLastOutSplit,
    items: ItemTable,
    config: TrainingConfig,
    ranker: RankerTrainConfig,
    out_dir: Path,
    seed: int,
    covisitation_neighbours: int | None = None,
) -> tuple[Path, dict[str, float]]:
    """A copy of `version_dir` with the ranker retrained as train_all trains it (and, with
    `covisitation_neighbours`, both co-visitation tables refitted that wide)."""
    # What the version itself was trained with (not today's defaults for the data set): the
    # co-visitation width, the two-tower settings and whether the served two-tower saw
    # every training event. Older manifests predate the last two keys.
    trained = json.loads((version_dir / "manifest.json").read_text())["training_config"]
    top = covisitation_neighbours or trained.get("covisitation_neighbours", 100)
    retrieval_train = retrieval_training_events(split, config)
    served = Retriever.load(version_dir, device="cpu")
    two_tower, item_index = served.model, served.index
    if trained.get("retrieval_on_all_events", False):
        # The stored two-tower saw every training event; train_all built the ranker's data
        # with one that held out the ranker's positions (same settings and seed): so does
        # this, with the served index's kind and parameters.
        two_tower_config = TwoTowerTrainConfig(**trained["two_tower"])
        two_tower = train_two_tower(retrieval_train, items, two_tower_config)
        embeddings = item_embeddings(two_tower, items)
        item_index = ItemIndex(
            build_index(embeddings, index_config(served.index.index)),
            embeddings,
            items.categories,
            len(items.category_names),
        )
    retriever = candidate_retriever(items, two_tower, item_index, retrieval_train, config, top)
    rng = np.random.default_rng(seed)
    examples, validation = _ranking_data(split, retriever, ranker, rng)
    model, fit = train_ranker(
        examples, validation, items, ranker, covisitation=retriever.covisitation
    )
    copy = out_dir / version_dir.name
    shutil.copytree(version_dir, copy)
    served_covisitation = CoVisitation.load(version_dir / "ranking")
    if covisitation_neighbours is not None:
        served_covisitation = CoVisitation.fit(split.train, len(items), top=top)
        served_covisitation.save(copy / "retrieval")
    shutil.rmtree(copy / "ranking")
    save_ranker(copy / "ranking", model, served_covisitation)
    # The copy's retrieval is unchanged; its ranker now has this build's feature schema.
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["feature_schema"] = list(DENSE_FEATURES)
    manifest_path.write_text(json.dumps(manifest))
    return copy, fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=None, help="root or version dir")
    parser.add_argument("--variants", nargs="+", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--target", choices=["validation", "test"], default="validation")
    parser.add_argument("--json", type=Path, default=None, help="append results (JSON lines)")
    parser.add_argument(
        "--retrain-all",
        action="store_true",
        help="train every model per variant and seed (two-tower and ranker seeded with s) "
        "instead of retraining the ranker on the --artifacts version",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.dataset == "synthetic":
        from recdata.synthetic import generate

        dataset = generate()
    else:
        from recdata.loaders import load_dataset

        dataset = load_dataset(args.dataset, args.data)[0]
    config = TrainingConfig.for_dataset(args.dataset)
    if args.retrain_all:
        return retrain_all(dataset, config, args)
    version_dir = resolve(args.artifacts)
    items = ItemTable.load(version_dir / "items")
    split = leave_last_out(user_sequences(dataset.interactions, items))
    eval_set = EvaluationSet.from_split(split, items.popularity, target=args.target)
    print(f"artifact {version_dir.name}; {args.target} target, {len(eval_set.targets)} users")
    print("| variant | seed | recall@10 | recall@50 | ndcg@10 | early-stop ndcg@10 | s |")
    print("|---|---|---|---|---|---|---|")
    means: dict[str, list[tuple[float, float, float]]] = {}
    retrieval_row = None
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.variants:
            for seed in args.seeds:
                started = time.perf_counter()
                changes = dict(VARIANTS[name])
                if changes.pop("retrieval_on_all_events", False):
                    raise SystemExit(f"{name} changes retrieval training: use --retrain-all")
                neighbours = changes.pop("covisitation_neighbours", None)
                ranker = dataclasses.replace(config.ranker, **changes, seed=seed)
                evaluated, fit = retrain_ranker(
                    version_dir,
                    split,
                    items,
                    config,
                    ranker,
                    Path(scratch) / f"{name}-{seed}",
                    seed,
                    neighbours,
                )
                report = EvaluationReport(len(eval_set.targets), 0, target=args.target)
                evaluate_served_pipeline(evaluated, eval_set, report, lambda _: None)
                shutil.rmtree(evaluated)
                retrieval_row = report.rows[RETRIEVAL_ROW]
                m = report.rows[RANKING_ROW]
                means.setdefault(name, []).append((m["recall@10"], m["recall@50"], m["ndcg@10"]))
                seconds = time.perf_counter() - started
                print(
                    f"| {name} | {seed} | {m['recall@10']:.4f} | {m['recall@50']:.4f} "
                    f"| {m['ndcg@10']:.4f} | {fit['validation_ndcg@10']:.4f} | {seconds:.0f} |",
                    flush=True,
                )
                if args.json:
                    with args.json.open("a") as out:
                        row = {"dataset": args.dataset, "artifact": version_dir.name}
                        row |= {"target": args.target, "variant": name, "seed": seed}
                        out.write(json.dumps({**row, **m, "seconds": seconds}) + "\n")
    for name, rows in means.items():
        r10, r50, n10 = np.mean(rows, axis=0)
        print(f"| {name} | mean of {len(rows)} | {r10:.4f} | {r50:.4f} | {n10:.4f} | | |")
    if retrieval_row is not None:
        m = retrieval_row
        print(
            f"| retrieval order (no ranker) | | {m['recall@10']:.4f} | {m['recall@50']:.4f} "
            f"| {m['ndcg@10']:.4f} | | |"
        )
    return 0


def retrain_all(dataset: Any, config: TrainingConfig, args: argparse.Namespace) -> int:
    """Every model trained per variant and seed (`recserve train` with seeds = s)."""
    print(f"{args.target} target; every model retrained per run")
    print(
        "| variant | seed | retrieval recall@50 | retrieval recall@200 | recall@10 | recall@50 "
        "| ndcg@10 | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    means: dict[str, list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.variants:
            for seed in args.seeds:
                started = time.perf_counter()
                changes = dict(VARIANTS[name])
                run = dataclasses.replace(config)
                for key in ("covisitation_neighbours", "retrieval_on_all_events"):
                    if key in changes:
                        setattr(run, key, changes.pop(key))
                run.ranker = dataclasses.replace(config.ranker, **changes, seed=seed)
                run.two_tower = dataclasses.replace(config.two_tower, seed=seed)
                version_dir = train_all(
                    dataset, Path(scratch) / f"{name}-{seed}", run, progress=lambda _: None
                )
                items = ItemTable.load(version_dir / "items")
                split = leave_last_out(user_sequences(dataset.interactions, items))
                eval_set = EvaluationSet.from_split(split, items.popularity, target=args.target)
                report = EvaluationReport(len(eval_set.targets), 0, target=args.target)
                evaluate_served_pipeline(version_dir, eval_set, report, lambda _: None)
                shutil.rmtree(version_dir.parent)
                r, m = report.rows[RETRIEVAL_ROW], report.rows[RANKING_ROW]
                row = (
                    r["recall@50"],
                    r["recall@200"],
                    m["recall@10"],
                    m["recall@50"],
                    m["ndcg@10"],
                )
                means.setdefault(name, []).append(row)
                seconds = time.perf_counter() - started
                print(
                    f"| {name} | {seed} | "
                    + " | ".join(f"{v:.4f}" for v in row)
                    + f" | {seconds:.0f} |",
                    flush=True,
                )
                if args.json:
                    with args.json.open("a") as out:
                        meta = {"dataset": args.dataset, "target": args.target, "variant": name}
                        meta |= {"seed": seed, "retrain_all": True, "retrieval": r}
                        out.write(json.dumps({**meta, **m, "seconds": seconds}) + "\n")
    for name, rows in means.items():
        mean = np.mean(rows, axis=0)
        print(f"| {name} | mean of {len(rows)} | " + " | ".join(f"{v:.4f}" for v in mean) + " | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
