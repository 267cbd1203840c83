"""Train all three models on one dataset and publish a versioned artifact directory.

Order matters: tags first (ranking uses catalogue tags as features), then the two-tower
model and its FAISS index, then the ranker, whose hard negatives are retrieval's own
candidates, then (TrainingConfig.retrieval_on_all_events; on for MovieLens, see
TrainingConfig.for_dataset) the served two-tower model again on every training event.
Each model's held-out metric and its trivial baseline go into the manifest.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.harness import (
    RANKING_ROW,
    RETRIEVAL_ROW,
    EvaluationReport,
    EvaluationSet,
    evaluate_baselines,
    evaluate_served_pipeline,
)
from ranking.features import DENSE_FEATURES
from ranking.scorer import save_ranker
from ranking.train import (
    RankerTrainConfig,
    RankingExamples,
    RankingValidation,
    sample_negatives,
    train_ranker,
)
from recdata.artifacts import (
    ArtifactError,
    data_fingerprint,
    publish,
    read_manifest,
    resolve,
    write_manifest,
)
from recdata.errors import TooLittleData
from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recdata.schema import Dataset, validate_dataset
from recdata.split import (
    LeaveLastOutSplit,
    UserSequences,
    leave_last_out,
    popularity_counts,
    user_sequences,
)
from retrieval.covisitation import CoVisitation
from retrieval.index import IndexConfig, ItemIndex
from retrieval.index_quality import build_and_assess
from retrieval.model import TwoTower
from retrieval.retriever import Retriever, save_retrieval
from retrieval.train import (
    TwoTowerTrainConfig,
    item_embeddings,
    train_two_tower,
    user_embeddings,
)
from tagging.catalog_tags import CatalogTags
from tagging.text import product_text
from tagging.train import TaggerTrainConfig, train_tagger

Progress = Callable[[str], None]

RANKING_CANDIDATES = 200  # what the gateway asks retrieval for by default


@dataclass
class TrainingConfig:
    tagger: TaggerTrainConfig = field(default_factory=TaggerTrainConfig)
    two_tower: TwoTowerTrainConfig = field(default_factory=TwoTowerTrainConfig)
    ranker: RankerTrainConfig = field(default_factory=RankerTrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    max_eval_users: int = 5000
    # Neighbours kept per item in the co-visitation table (retrieval's second source and the
    # ranker's co-visitation features); memory is items × neighbours × 12 bytes (int64 rows,
    # float32 weights) per copy, and the ranker's copy keeps a row-sorted second one.
    covisitation_neighbours: int = 100
    # Retrain the two-tower model on every training event for serving, after the ranker has
    # learned from a copy that held out each user's last positions (twice the retrieval
    # training time; the served model then also knows each user's newest training events).
    retrieval_on_all_events: bool = False

    @classmethod
    def for_dataset(cls, name: str) -> TrainingConfig:
        """Defaults per data set; every value lands in the manifest. Each data set's own
        values were chosen on its validation target (docs/evaluation.md, issue 3); the
        defaults are what the synthetic data's validation target chose."""
        config = cls()
        if name == "movielens":
            # Session-like ratings: the served two-tower needs each user's newest events,
            # and a wider co-visitation table and more hard negatives help the ranker.
            config.retrieval_on_all_events = True
            config.covisitation_neighbours = 300
            config.ranker.hard_negatives = 32
            config.ranker.random_negatives = 4
        elif name == "online-retail":
            # Baskets, not sessions: co-visitation with the newest items misled the ranker.
            config.ranker.recent_covisitation = False
        return config


def _stage(progress: Progress, name: str) -> Callable[[], None]:
    started = time.perf_counter()
    progress(f"[{name}] ...")

    def done() -> None:
        progress(f"[{name}] done in {time.perf_counter() - started:.1f}s")

    return done


def reusable_version(artifact_root: Path, dataset: Dataset) -> Path | None:
    """The newest complete version trained on exactly this data by a compatible build
    (same ranking feature schema), or None."""
    try:
        version_dir = resolve(artifact_root)
        manifest = read_manifest(version_dir)
    except (ArtifactError, OSError, ValueError):
        return None
    same_data = manifest.get("data_fingerprint") == data_fingerprint(
        dataset.items, dataset.interactions
    )
    same_schema = manifest.get("feature_schema") == list(DENSE_FEATURES)
    complete = "retrieval" in manifest.get("components", [])
    return version_dir if same_data and same_schema and complete else None


def train_all(
    dataset: Dataset, artifact_root: Path, config: TrainingConfig, progress: Progress = print
) -> Path:
    """Train everything, write `<artifact_root>/<version>/`, point LATEST at it, return it."""
    validate_dataset(dataset)
    progress(f"dataset {dataset.describe()}")
    metrics: dict[str, Any] = {}

    done = _stage(progress, "tagging")
    texts = [
        product_text(t, d, c)
        for t, d, c in zip(
            dataset.items["title"],
            dataset.items["description"],
            dataset.items["category"],
            strict=True,
        )
    ]
    tagger, tag_metrics = train_tagger(
        texts, [list(t) for t in dataset.items["tags"]], config.tagger, progress=progress
    )
    metrics["tagging"] = tag_metrics
    catalog_tags = CatalogTags.from_probabilities(
        dataset.items["item_id"].to_numpy(np.int64),
        tagger.predict_proba(texts),
        tagger.tag_names,
        tagger.thresholds,  # per tag, calibrated on validation items
    )
    done()

    if len(dataset.interactions) == 0:
        progress("catalogue only (no interactions): publishing a tagging-only version")
        return _publish(
            artifact_root,
            dataset,
            metrics,
            config,
            ["tagging"],
            lambda d: (tagger.save(d / "tagging"), catalog_tags.save(d / "tagging")),
            progress=progress,
        )

    done = _stage(progress, "split")
    items = ItemTable.from_frame(dataset.items)
    sequences = user_sequences(dataset.interactions, items)
    split = leave_last_out(sequences)
    items.popularity = popularity_counts(split.train, len(items))
    items.tag_names = catalog_tags.tag_names
    items.tag_matrix = catalog_tags.multi_hot(items.item_ids)
    progress(
        f"{len(split.train.user_ids)} users with >= 3 events; "
        f"{sum(len(s) for s in split.train.sequences)} training events"
    )
    done()

    done = _stage(progress, "retrieval")
    # The ranker learns from each user's last few training positions, scored by a retrieval
    # model that never saw them; otherwise its retrieval-score feature is inflated by
    # memorisation in training and misleads it at serving time. The model served is then
    # retrained on every training event (retrieval_on_all_events, below).
    retrieval_train = retrieval_training_events(split, config)
    two_tower = train_two_tower(retrieval_train, items, config.two_tower, progress=progress)

    def build_index(model: TwoTower) -> tuple[np.ndarray, Any, Any, ItemIndex]:
        embeddings = item_embeddings(model, items)
        # Measure the configured index against exact search on the queries it will serve:
        # user vectors of full histories, whose last events the model never trained on
        # (every user is in training under leave-last-out), for a seeded sample of users.
        # The service refuses a version below its recall floor.
        sample = np.random.default_rng(config.two_tower.seed).permutation(len(split.full.sequences))
        queries = [split.full.sequences[i] for i in sample[:2000]]
        # A catalogue smaller than the candidate list is measured over all of it.
        k = min(RANKING_CANDIDATES, len(embeddings))
        index, quality = build_and_assess(
            embeddings, user_embeddings(model, queries, items), k, config.index
        )
        progress(
            f"index {config.index.kind}: recall@{k} vs exact "
            f"{quality.recall:.4f} on {quality.queries} users' histories (last events unseen)"
        )
        return (
            embeddings,
            index,
            quality,
            ItemIndex(index, embeddings, items.categories, len(items.category_names)),
        )

    embeddings, index, index_quality, item_index = build_index(two_tower)
    # The ranker's training candidates and features come from co-visitation over the same
    # positions retrieval trained on; the served table uses every training event.
    covisitation = CoVisitation.fit(split.train, len(items), top=config.covisitation_neighbours)
    retriever = candidate_retriever(items, two_tower, item_index, retrieval_train, config)
    done()

    rng = np.random.default_rng(config.two_tower.seed)
    done = _stage(progress, "ranking")
    examples, validation = _ranking_data(split, retriever, config.ranker, rng)
    ranker, ranker_fit = train_ranker(
        examples,
        validation,
        items,
        config.ranker,
        progress,
        covisitation=retriever.covisitation,
    )
    done()

    if config.retrieval_on_all_events:
        done = _stage(progress, "retrieval for serving (every training event)")
        two_tower = train_two_tower(split.train, items, config.two_tower, progress=progress)
        embeddings, index, index_quality, _ = build_index(two_tower)
        done()

    def write(directory: Path) -> None:
        items.save(directory / "items")
        UserHistoryStore.from_sequences(split.full, items).save(directory / "users")
        save_retrieval(
            directory / "retrieval", two_tower, embeddings, index, config.index.kind, covisitation
        )
        save_ranker(directory / "ranking", ranker, covisitation)
        tagger.save(directory / "tagging")
        catalog_tags.save(directory / "tagging")

    def evaluate(directory: Path) -> dict[str, Any]:
        eval_set = EvaluationSet.from_split(split, items.popularity, config.max_eval_users)
        report = EvaluationReport(len(eval_set.targets), int(eval_set.cold_targets.sum()))
        evaluate_served_pipeline(directory, eval_set, report, progress)
        evaluate_baselines(split, items, eval_set, report, ["popularity"], progress)
        metrics["retrieval"] = report.rows[RETRIEVAL_ROW]
        metrics["ranking"] = {**report.rows[RANKING_ROW], **ranker_fit}
        metrics["baselines"] = {"popularity": report.rows["baseline: popularity"]}
        metrics["cold_start_recall@50"] = report.cold_start_recall50
        return {
            "counts": {
                "items": len(items),
                "users": len(sequences.user_ids),
                "interactions": len(dataset.interactions),
                "eval_users": report.users,
            },
            "dims": {"embedding": int(embeddings.shape[1]), "tags": len(catalog_tags.tag_names)},
            "index": index_quality.to_dict(),
            "evaluation": "leave-last-out by time; full catalogue; seen items excluded",
        }

    components = ["items", "users", "retrieval", "ranking", "tagging"]
    return _publish(artifact_root, dataset, metrics, config, components, write, evaluate, progress)


def _publish(
    artifact_root: Path,
    dataset: Dataset,
    metrics: dict[str, Any],
    config: TrainingConfig,
    components: list[str],
    write: Callable[[Path], object],
    evaluate: Callable[[Path], dict[str, Any]] | None = None,
    progress: Progress = print,
) -> Path:
    """Write into `<version>.partial`, evaluate what was written (the files the services
    load), add the manifest, rename, then point LATEST at it."""
    fingerprint = data_fingerprint(dataset.items, dataset.interactions)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + fingerprint[:8]
    version_dir = artifact_root / version
    tmp_dir = artifact_root / (version + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    done = _stage(progress, f"writing artifacts {version_dir}")
    write(tmp_dir)
    done()
    extra: dict[str, Any] = {}
    if evaluate is not None:
        done = _stage(progress, "held-out evaluation of the written artifacts")
        extra = evaluate(tmp_dir)
        done()
    write_manifest(
        tmp_dir,
        {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": dataset.name,
            "data_fingerprint": fingerprint,
            "components": components,
            "feature_schema": list(DENSE_FEATURES),
            "metrics": metrics,
            "training_config": {
                "tagger": asdict(config.tagger),
                "two_tower": asdict(config.two_tower),
                "ranker": asdict(config.ranker),
                "covisitation_neighbours": config.covisitation_neighbours,
                "retrieval_on_all_events": config.retrieval_on_all_events,
            },
            **extra,
        },
    )
    tmp_dir.rename(version_dir)
    publish(artifact_root, version)
    progress(f"published {version_dir}")
    return version_dir


def retrieval_training_events(split: LeaveLastOutSplit, config: TrainingConfig) -> UserSequences:
    """What the retrieval model behind the ranker's training data learns from: the training
    events minus each user's last `examples_per_user` positions, which the ranker learns
    from (scored by a model that saw them, the retrieval-score feature would be inflated by
    memorisation and mislead the ranker at serving time)."""
    held = config.ranker.examples_per_user
    return UserSequences(
        split.train.user_ids, [s[:-held] if len(s) > held + 1 else s for s in split.train.sequences]
    )


def candidate_retriever(
    items: ItemTable,
    two_tower: TwoTower,
    item_index: ItemIndex,
    retrieval_train: UserSequences,
    config: TrainingConfig,
    covisitation_neighbours: int | None = None,
) -> Retriever:
    """The retriever whose candidates and co-visitation the ranker trains on: co-visitation
    over the same events as `two_tower` (`covisitation_neighbours` overrides the width)."""
    top = covisitation_neighbours or config.covisitation_neighbours
    return Retriever(
        items, two_tower, item_index, CoVisitation.fit(retrieval_train, len(items), top=top)
    )


def _ranking_data(
    split: LeaveLastOutSplit,
    retriever: Retriever,
    cfg: RankerTrainConfig,
    rng: np.random.Generator,
) -> tuple[RankingExamples, RankingValidation]:
    """Examples from each user's most recent training positions (held out from retrieval
    training); candidates are exactly what the retrieval service would return for them."""
    histories: list[np.ndarray] = []
    targets: list[int] = []
    for seq in split.train.sequences:
        if len(seq) <= cfg.examples_per_user + 1:
            continue
        for t in range(len(seq) - cfg.examples_per_user, len(seq)):
            histories.append(seq[:t])
            targets.append(int(seq[t]))
    if not histories:
        raise TooLittleData(
            f"no ranking examples: no user has more than {cfg.examples_per_user + 1} "
            "training events"
        )
    target_arr = np.array(targets, np.int64)
    pool, _ = retriever.retrieve_rows_many(histories, RANKING_CANDIDATES)
    # Keep examples whose target retrieval actually returns: at serving the ranker only ever
    # sees retrieved candidates, so positives and negatives must come from that same set.
    keep = np.flatnonzero((pool == target_arr[:, None]).any(axis=1))
    if len(keep) == 0:
        raise TooLittleData(
            f"no ranking examples: retrieval's top {min(RANKING_CANDIDATES, len(retriever.items))} "
            f"(the user's history excluded) holds none of the {len(histories)} training "
            "targets: every target is already in its user's history, or ranked below"
        )
    histories = [histories[i] for i in keep]
    target_arr, pool = target_arr[keep], pool[keep]
    candidates = sample_negatives(target_arr, pool, len(retriever.items), cfg, rng)
    # Retrieval scores of the sampled rows (random negatives included): user · item vector.
    vecs = user_embeddings(retriever.model, histories, retriever.items)
    embeddings = retriever.index.embeddings[candidates]
    scores = np.einsum("ud,ukd->uk", vecs, embeddings).astype(np.float32)
    examples = RankingExamples(histories, candidates, scores)

    val_hist = list(split.train.sequences)
    val_cands, val_scores = retriever.retrieve_rows_many(val_hist, RANKING_CANDIDATES)
    return examples, RankingValidation(val_hist, val_cands, val_scores, split.validation_targets)
