"""Tag evaluation: our tagger vs. TF-IDF + logistic regression on one held-out item split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from recdata.schema import Dataset
from tagging.text import product_text
from tagging.train import TaggerTrainConfig, multilabel_prf, train_tagger

Progress = Callable[[str], None]
TEST_FRACTION = 0.2


def _texts(dataset: Dataset) -> list[str]:
    items = dataset.items
    return [
        product_text(t, d, c)
        for t, d, c in zip(items["title"], items["description"], items["category"], strict=True)
    ]


def evaluate_tags(
    dataset: Dataset, config: TaggerTrainConfig, seed: int = 0, progress: Progress = print
) -> dict[str, Any]:
    """Micro/macro P/R/F1 at the served threshold and P/R@k, ours vs. the baseline."""
    from evaluation.tag_baseline import tag_metrics_at_k, tfidf_logreg_baseline

    texts = _texts(dataset)
    tags = [list(t) for t in dataset.items["tags"]]
    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = int(len(texts) * TEST_FRACTION)
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_texts = [texts[i] for i in train_idx]
    train_tags = [tags[i] for i in train_idx]
    test_texts = [texts[i] for i in test_idx]
    test_tags = [tags[i] for i in test_idx]

    started = time.perf_counter()
    tagger, _fit = train_tagger(
        train_texts, train_tags, replace(config, seed=seed), progress=progress
    )
    train_seconds = time.perf_counter() - started
    vocabulary = tagger.tag_names
    true = tagger.vocabulary.encode(test_tags) > 0
    proba = tagger.predict_proba(test_texts)
    ours: dict[str, Any] = {
        **multilabel_prf(proba >= tagger.threshold, true),
        **tag_metrics_at_k(proba, true, 1),
        **tag_metrics_at_k(proba, true, 3),
        "threshold": tagger.threshold,
        "train_seconds": round(train_seconds, 1),
    }
    progress(f"our tagger: micro-F1 {ours['micro_f1']:.4f}")
    baseline = tfidf_logreg_baseline(
        train_texts, train_tags, test_texts, test_tags, vocabulary, seed=seed
    )
    progress(f"TF-IDF + LR: micro-F1 {baseline['micro_f1']:.4f}")
    return {
        "items_train": len(train_idx),
        "items_test": len(test_idx),
        "tags": len(vocabulary),
        "ours (hashed n-grams + MLP)": ours,
        "baseline: tfidf + logistic regression": baseline,
    }


def tags_markdown(result: dict[str, Any]) -> str:
    columns = [
        "micro_precision",
        "micro_recall",
        "micro_f1",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "precision@1",
        "recall@3",
    ]
    lines = ["| tagger | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, metrics in result.items():
        if isinstance(metrics, dict):
            cells = [f"{metrics[c]:.4f}" if c in metrics else "–" for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{result['items_train']} training items, {result['items_test']} held-out "
        f"items, {result['tags']} tags."
    )
    return "\n".join(lines)
