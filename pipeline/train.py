"""Train all three models on one dataset and publish a versioned artifact directory.

Order matters: tags first (ranking uses catalogue tags as features), then the two-tower
model and its FAISS index, then the ranker, whose hard negatives are retrieval's own
candidates. Each model's held-out metric and its trivial baseline go into the manifest.
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

from evaluation.metrics import summarize
from ranking.features import FeatureBuilder
from ranking.scorer import save_ranker
from ranking.train import (
    RankerTrainConfig,
    RankingExamples,
    RankingValidation,
    rerank,
    sample_negatives,
    train_ranker,
)
from recdata.artifacts import data_fingerprint, publish, write_manifest
from recdata.feature_store import UserHistoryStore
from recdata.items import ItemTable
from recdata.schema import Dataset, validate_dataset
from recdata.split import UserSequences, leave_last_out, popularity_counts, user_sequences
from retrieval.index import ItemIndex, build_index
from retrieval.retriever import save_retrieval
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
    index_kind: str = "flat"
    max_eval_users: int = 5000


def _stage(progress: Progress, name: str) -> Callable[[], None]:
    started = time.perf_counter()
    progress(f"[{name}] ...")

    def done() -> None:
        progress(f"[{name}] done in {time.perf_counter() - started:.1f}s")

    return done


def _exclusions(histories: list[np.ndarray]) -> list[np.ndarray]:
    return [np.unique(h) for h in histories]


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
        tagger.threshold,
    )
    done()

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
    # memorisation in training and misleads it at serving time.
    held = config.ranker.examples_per_user
    retrieval_train = UserSequences(
        split.train.user_ids, [s[:-held] if len(s) > held + 1 else s for s in split.train.sequences]
    )
    two_tower = train_two_tower(retrieval_train, items, config.two_tower, progress=progress)
    embeddings = item_embeddings(two_tower, items)
    index = build_index(embeddings, config.index_kind)
    item_index = ItemIndex(index, embeddings, items.categories, len(items.category_names))
    done()

    rng = np.random.default_rng(config.two_tower.seed)
    n_users = len(split.train.user_ids)
    eval_users = np.sort(rng.choice(n_users, min(n_users, config.max_eval_users), replace=False))
    test_hist = [
        np.concatenate([split.train.sequences[u], [split.validation_targets[u]]])
        for u in eval_users
    ]
    test_targets = split.test_targets[eval_users]

    done = _stage(progress, "retrieval evaluation")
    user_vecs = user_embeddings(two_tower, test_hist, items)
    retrieved = item_index.search_many(user_vecs, RANKING_CANDIDATES, _exclusions(test_hist))
    popular = _popularity_ranking(items.popularity, test_hist, RANKING_CANDIDATES)
    retrieval_metrics = summarize(retrieved, test_targets, len(items), (10, 20, 50, 100, 200))
    popularity_metrics = summarize(popular, test_targets, len(items), (10, 20, 50, 100, 200))
    metrics["retrieval"] = retrieval_metrics
    metrics["baselines"] = {"popularity": popularity_metrics}
    progress(f"retrieval   {retrieval_metrics}")
    progress(f"popularity  {popularity_metrics}")
    done()

    done = _stage(progress, "ranking")
    examples, validation = _ranking_data(
        split, items, two_tower, embeddings, item_index, config.ranker, rng
    )
    ranker, ranker_fit = train_ranker(examples, validation, items, config.ranker, progress)
    scores = _dot_scores(user_vecs, embeddings, retrieved)
    reranked = rerank(ranker, FeatureBuilder(items), test_hist, retrieved, scores)
    metrics["ranking"] = {**summarize(reranked, test_targets, len(items)), **ranker_fit}
    progress(f"retrieval+ranking {metrics['ranking']}")
    done()

    fingerprint = data_fingerprint(dataset.items, dataset.interactions)
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + fingerprint[:8]
    version_dir = artifact_root / version
    tmp_dir = artifact_root / (version + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    done = _stage(progress, f"writing artifacts {version_dir}")
    items.save(tmp_dir / "items")
    UserHistoryStore.from_sequences(split.full, items).save(tmp_dir / "users")
    save_retrieval(tmp_dir / "retrieval", two_tower, embeddings, index, config.index_kind)
    save_ranker(tmp_dir / "ranking", ranker)
    tagger.save(tmp_dir / "tagging")
    catalog_tags.save(tmp_dir / "tagging")
    write_manifest(
        tmp_dir,
        {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset": dataset.name,
            "data_fingerprint": fingerprint,
            "counts": {
                "items": len(items),
                "users": len(sequences.user_ids),
                "interactions": len(dataset.interactions),
                "eval_users": len(eval_users),
            },
            "dims": {"embedding": int(embeddings.shape[1]), "tags": len(catalog_tags.tag_names)},
            "index": {"kind": config.index_kind},
            "evaluation": "leave-last-out by time; full catalogue; seen items excluded",
            "metrics": metrics,
            "training_config": {
                "tagger": asdict(config.tagger),
                "two_tower": asdict(config.two_tower),
                "ranker": asdict(config.ranker),
            },
        },
    )
    tmp_dir.rename(version_dir)
    publish(artifact_root, version)
    done()
    return version_dir


def _popularity_ranking(popularity: np.ndarray, histories: list[np.ndarray], k: int) -> np.ndarray:
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    extra = max(len(h) for h in histories) if histories else 0
    head = order[: k + extra]
    out = np.full((len(histories), k), -1, np.int64)
    for i, h in enumerate(histories):
        kept = head[~np.isin(head, h)][:k]
        out[i, : len(kept)] = kept
    return out


def _dot_scores(user_vecs: np.ndarray, embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    safe = np.where(rows >= 0, rows, 0)
    return np.einsum("ud,ukd->uk", user_vecs, embeddings[safe]).astype(np.float32)


def _ranking_data(
    split: Any,
    items: ItemTable,
    two_tower: Any,
    embeddings: np.ndarray,
    item_index: ItemIndex,
    cfg: RankerTrainConfig,
    rng: np.random.Generator,
) -> tuple[RankingExamples, RankingValidation]:
    """Training examples from each user's most recent training positions, with retrieval's
    candidates as hard negatives; validation = reranking retrieval's top-K for the
    validation target."""
    histories: list[np.ndarray] = []
    targets: list[int] = []
    for seq in split.train.sequences:
        if len(seq) <= cfg.examples_per_user + 1:
            continue
        for t in range(len(seq) - cfg.examples_per_user, len(seq)):
            histories.append(seq[:t])
            targets.append(int(seq[t]))
    target_arr = np.array(targets, np.int64)
    vecs = user_embeddings(two_tower, histories, items)
    pool = item_index.search_many(vecs, RANKING_CANDIDATES, _exclusions(histories))
    # Keep examples whose target retrieval actually returns: at serving the ranker only ever
    # sees retrieved candidates, so positives and negatives must come from that same set.
    retrieved = (pool == target_arr[:, None]).any(axis=1)
    keep = np.flatnonzero(retrieved)
    histories = [histories[i] for i in keep]
    target_arr, vecs, pool = target_arr[keep], vecs[keep], pool[keep]
    candidates = sample_negatives(target_arr, pool, len(items), cfg, rng)
    examples = RankingExamples(histories, candidates, _dot_scores(vecs, embeddings, candidates))

    val_hist = list(split.train.sequences)
    val_vecs = user_embeddings(two_tower, val_hist, items)
    val_cands = item_index.search_many(val_vecs, RANKING_CANDIDATES, _exclusions(val_hist))
    validation = RankingValidation(
        val_hist, val_cands, _dot_scores(val_vecs, embeddings, val_cands), split.validation_targets
    )
    return examples, validation
